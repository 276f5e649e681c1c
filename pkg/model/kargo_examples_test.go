package model

import (
	"strings"
	"testing"
	"time"
)

// TestKargoDocExamples decodes manifests shaped like the examples of
// Kargo's reference pages (working with warehouses, stages, projects,
// promotion windows, cluster configuration), in our own words and values,
// and checks what Caravan makes of each field: decoded, defaulted, warned
// about or refused.
func TestKargoDocExamples(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		yaml     string
		warnings []string // fields warned about, in order
		refused  []string // fields validation refuses
		check    func(t *testing.T, obj Object)
	}{
		{
			name: "warehouse with named subscriptions",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: shop, namespace: retail}
spec:
  subscriptions:
  - name: frontend
    image:
      repoURL: registry.example.com/shop/frontend
      constraint: ^2.4.0
  - name: manifests
    git:
      repoURL: https://git.example.com/retail/shop-config.git
      branch: main
      blobless: true
  - chart:
      repoURL: https://charts.example.com/stable
      name: redis
      insecureSkipTLSVerify: true`,
			warnings: []string{"spec.subscriptions[1].git.blobless"},
			check: func(t *testing.T, obj Object) {
				w := obj.(*Warehouse)
				if w.Spec.Subscriptions[0].Name != "frontend" || w.Spec.Subscriptions[1].Name != "manifests" {
					t.Errorf("names: %+v", w.Spec.Subscriptions)
				}
				if !w.Spec.Subscriptions[2].Chart.InsecureSkipTLSVerify || !w.Spec.Subscriptions[1].Git.Blobless {
					t.Errorf("flags lost: %+v %+v", w.Spec.Subscriptions[2].Chart, w.Spec.Subscriptions[1].Git)
				}
			},
		},
		{
			name: "generic subscription",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: models, namespace: ml}
spec:
  subscriptions:
  - oci-artifact:
      name: weights
      discoveryLimit: 5
      config: {repository: registry.example.com/ml/weights}`,
			refused: []string{"spec.subscriptions[0].oci-artifact"},
			check: func(t *testing.T, obj Object) {
				g := obj.(*Warehouse).Spec.Subscriptions[0].Others["oci-artifact"]
				if g.Name != "weights" || g.DiscoveryLimit != 5 || g.Config["repository"] == nil {
					t.Errorf("generic subscription: %+v", g)
				}
			},
		},
		{
			name: "subscription names are unique",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: shop, namespace: retail}
spec:
  subscriptions:
  - {name: app, image: {repoURL: registry.example.com/shop/api}}
  - {name: app, image: {repoURL: registry.example.com/shop/web}}`,
			refused: []string{"spec.subscriptions[1].name"},
		},
		{
			name: "fan-in gate: a control-flow stage waits for both regions",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: regions-verified, namespace: retail}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: shop}
    sources:
      stages: [eu-west, us-east]
      availabilityStrategy: All
      requiredSoakTime: 30m`,
			check: func(t *testing.T, obj Object) {
				s := obj.(*Stage)
				src := s.Spec.RequestedFreight[0].Sources
				if !s.IsControlFlow() || src.AvailabilityStrategy != AvailabilityStrategyAll || src.RequiredSoakTime.Duration != 30*time.Minute {
					t.Errorf("gate: control flow %v, %+v", s.IsControlFlow(), src)
				}
			},
		},
		{
			name: "stage governing targets",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: edge, namespace: retail}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: shop}
    sources: {direct: true}
  targets:
    selectors:
    - matchLabels: {tier: edge}
  promotionTemplate:
    spec:
      steps:
      - uses: fail
        config: {message: placeholder}`,
			warnings: []string{"spec.targets"},
		},
		{
			name: "project config with windows, rollback and links",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: retail, namespace: retail}
spec:
  promotionPolicies:
  - stageSelector: {name: "glob:eu-*"}
    autoPromotionEnabled: true
    autoRollback:
      onVerification: [Failed]
      onPromotion: [Errored]
  promotionWindows:
  - name: no-friday-deploys
    kind: Deny
    dtstart: "TZID=Europe/Paris:20260102T150000"
    dtend: "TZID=Europe/Paris:20260102T235900"
    rrule: FREQ=WEEKLY;BYDAY=FR
    stageSelector: {name: "regex:^prod-"}
  freightLinks:
  - title: Changelog
    url: "${{ 'https://git.example.com/retail/shop/releases/' + freight.alias }}"
  stageLinks:
  - title: Dashboard
    url: "${{ 'https://grafana.example.com/d/' + stage.name }}"
    if: "${{ stage.name != 'dev' }}"`,
			warnings: []string{"spec.freightLinks", "spec.stageLinks"},
			check: func(t *testing.T, obj Object) {
				pc := obj.(*ProjectConfig)
				w := pc.Spec.PromotionWindows[0]
				if w.Kind != PromotionWindowDeny || w.RRule != "FREQ=WEEKLY;BYDAY=FR" || w.StageSelector.Name != "regex:^prod-" {
					t.Errorf("window: %+v", w)
				}
				if r := pc.Spec.PromotionPolicies[0].AutoRollback; r.OnVerification[0] != VerificationPhaseFailed || r.OnPromotion[0] != PromotionPhaseErrored {
					t.Errorf("rollback: %+v", r)
				}
			},
		},
		{
			name: "freight with generic artifacts and subscription names",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: 0d5bfa4e1c2b3a49e8f7d6c5b4a3928170615243, namespace: retail, creationTimestamp: "2026-03-01T10:00:00Z"}
origin: {kind: Warehouse, name: shop}
images:
- {subscriptionName: frontend, repoURL: registry.example.com/shop/frontend, tag: 2.4.1, digest: "sha256:4c1f"}
artifacts:
- {artifactType: application/vnd.example.weights, subscriptionName: weights, version: v7, metadata: {size: 3}}`,
			warnings: []string{"artifacts"},
			check: func(t *testing.T, obj Object) {
				f := obj.(*Freight)
				if f.DiscoveredAt == nil || !f.DiscoveredAt.Equal(f.CreationTimestamp.Time) {
					t.Errorf("discoveredAt not defaulted to the creation time: %v", f.DiscoveredAt)
				}
				if f.Images[0].SubscriptionName != "frontend" || f.Artifacts[0].Version != "v7" {
					t.Errorf("freight: %+v", f)
				}
			},
		},
		{
			name: "cluster config",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: ClusterConfig
metadata: {name: cluster}
spec:
  gitClient:
    name: Release Bot
    email: releases@example.com
    signingKeySecret: {name: release-gpg}
  webhookReceivers:
  - name: org-hooks
    github: {secretRef: {name: org-hook-secret}}`,
			warnings: []string{"spec.gitClient.signingKeySecret", "spec.webhookReceivers"},
		},
		{
			name: "cluster config with another name",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: ClusterConfig
metadata: {name: main}`,
			refused: []string{"metadata.name"},
		},
		{
			name: "target and promotion request",
			yaml: `
apiVersion: kargo.akuity.io/v1alpha1
kind: Target
metadata: {name: edge-paris, namespace: retail, labels: {tier: edge}}
spec:
  params:
    cluster: {region: eu-west-3, name: paris-1}
    branch: env/paris
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionRequest
metadata: {name: edge-rollout, namespace: retail}
spec:
  stage: edge
  freight: 0d5bfa4e1c2b3a49e8f7d6c5b4a3928170615243
  targets: [{name: edge-paris}]`,
			warnings: []string{"spec", "spec"},
		},
		{
			name: "analysis template including others",
			yaml: `
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: full-check, namespace: retail}
spec:
  templates:
  - templateName: error-rate
  - templateName: org-latency
    clusterScope: true`,
			check: func(t *testing.T, obj Object) {
				a := obj.(*AnalysisTemplate)
				if len(a.Spec.Templates) != 2 || !a.Spec.Templates[1].ClusterScope {
					t.Errorf("templates: %+v", a.Spec.Templates)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dec, err := Decode([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			var warned []string
			for _, w := range dec.Warnings {
				warned = append(warned, w.Field)
				if !strings.HasPrefix(w.Message, "accepted but not acted on by Caravan") {
					t.Errorf("warning %q does not say the field is not acted on", w.Message)
				}
			}
			if strings.Join(warned, ",") != strings.Join(tt.warnings, ",") {
				t.Errorf("warnings %v, want %v\n%v", warned, tt.warnings, dec.Warnings)
			}
			issues := Validate(dec.Documents, nil)
			var refused []string
			for _, is := range issues {
				if strings.Contains(is.Message, "does not exist") {
					continue // the project, warehouse and stages are not in this test
				}
				refused = append(refused, is.Field)
			}
			if strings.Join(refused, ",") != strings.Join(tt.refused, ",") {
				t.Errorf("refused %v, want %v\n%v", refused, tt.refused, issues)
			}
			if tt.check != nil {
				tt.check(t, dec.Documents[0].Object)
			}
		})
	}
}
