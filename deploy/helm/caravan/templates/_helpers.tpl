{{/* The release's base name. */}}
{{- define "caravan.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "caravan.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "caravan.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "caravan.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "caravan.natsURL" -}}
{{- if and .Values.nats.enabled .Values.nats.credsSecret -}}
{{- fail "nats.credsSecret: only with nats.enabled=false (the bundled NATS authenticates nats.users)" -}}
{{- end -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" (include "caravan.fullname" .) -}}
{{- else -}}
{{- required "nats.url: required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* Whether the components authenticate as the chart's NATS users. */}}
{{- define "caravan.natsUsers" -}}
{{- if and .Values.nats.users.enabled (not .Values.nats.credsSecret) }}true{{ end -}}
{{- end -}}

{{/* The Secret holding the NATS users' passwords. */}}
{{- define "caravan.natsUsersSecret" -}}
{{- default (printf "%s-nats-users" (include "caravan.fullname" .)) .Values.nats.users.existingSecret -}}
{{- end -}}

{{/* A checksum of nats.users.existingSecret's data (empty when the chart
generates the Secret, whose passwords never change, or when the Secret
cannot be read, as in helm template): pods annotated with it restart at
the upgrade after the passwords were rotated. */}}
{{- define "caravan.natsUsersChecksum" -}}
{{- if and (include "caravan.natsUsers" .) .Values.nats.users.existingSecret }}
{{- with (lookup "v1" "Secret" .Release.Namespace .Values.nats.users.existingSecret).data }}
{{- toJson . | sha256sum | trunc 16 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The password variable of a component's user in the bundled NATS. */}}
{{- define "caravan.natsPasswordVar" -}}
{{- printf "CARAVAN_%s_PASSWORD" (upper .) -}}
{{- end -}}

{{- define "caravan.serviceAccount" -}}
{{- printf "%s-%s" (include "caravan.fullname" .root) .component -}}
{{- end -}}

{{/*
The environment of a Caravan container: what the chart sets, then
.Values.config, then the component's own config (later entries win; a name
appears once). (dict "root" $ "component" "gateway" "config" ...)
*/}}
{{- define "caravan.env" -}}
{{- $root := .root -}}
{{- $env := dict -}}
{{- range $k, $v := $root.Values.config }}{{ $_ := set $env $k (toString $v) }}{{ end -}}
{{- range $k, $v := .config }}{{ $_ := set $env $k (toString $v) }}{{ end -}}
{{- range $k := list "CARAVAN_NATS_URL" "CARAVAN_JS_REPLICAS" "CARAVAN_DATA_DIR" "CARAVAN_ADMIN_ADDR" "CARAVAN_SECRET_KEY" "CARAVAN_ADMIN_TOKEN" "CARAVAN_NATS_CREDS" "CARAVAN_NATS_USER" "CARAVAN_NATS_PASSWORD" "CARAVAN_SSH_KNOWN_HOSTS" "CARAVAN_REPLICA_ID" }}
{{- if hasKey $env $k }}{{ fail (printf "config.%s: set by the chart; see values.yaml" $k) }}{{ end -}}
{{- end }}
- name: CARAVAN_NATS_URL
  value: {{ include "caravan.natsURL" $root | quote }}
- name: CARAVAN_JS_REPLICAS
  value: {{ $root.Values.nats.jsReplicas | quote }}
- name: CARAVAN_DATA_DIR
  value: /var/lib/caravan
- name: CARAVAN_ADMIN_ADDR
  value: {{ printf ":%v" $root.Values.admin.port | quote }}
- name: CARAVAN_ADMIN_PPROF
  value: {{ $root.Values.admin.pprof | quote }}
- name: CARAVAN_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.existingSecret }}
      key: {{ $root.Values.secrets.secretKeyKey }}
{{- if $root.Values.nats.credsSecret }}
- name: CARAVAN_NATS_CREDS
  value: /etc/caravan/nats/creds
{{- else if include "caravan.natsUsers" $root }}
- name: CARAVAN_NATS_USER
  value: {{ required (printf "nats.users.names.%s: required" .component) (index $root.Values.nats.users.names .component) | quote }}
- name: CARAVAN_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "caravan.natsUsersSecret" $root }}
      key: {{ required (printf "nats.users.passwordKeys.%s: required" .component) (index $root.Values.nats.users.passwordKeys .component) }}
{{- end }}
{{- if $root.Values.sshKnownHosts }}
- name: CARAVAN_SSH_KNOWN_HOSTS
  value: /etc/caravan/ssh/known_hosts
{{- end }}
{{- range $k := keys $env | sortAlpha }}
- name: {{ $k }}
  value: {{ get $env $k | quote }}
{{- end }}
{{- end -}}
