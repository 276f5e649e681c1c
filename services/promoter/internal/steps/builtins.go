package steps

import "github.com/caravan-cd/caravan/pkg/model"

// Reasons shared by several steps' differences.
const (
	noTLSSkip = "Caravan verifies TLS certificates always; trust a private CA on the server instead"
	noSigning = "Caravan does not sign commits or tags"
)

// builtins declares every built-in step: the one place a step's name,
// config, runner, replay rule, outputs and differences from Kargo live.
func builtins() []Definition {
	return []Definition{
		{Name: "argocd-update", Step: Typed[argoConfig](argocdUpdate), Effects: true},
		{Name: "argocd-wait", Step: Typed[argoWaitConfig](argocdWait), Effects: true},

		{Name: "compose-output", Step: Func(composeOutput)},
		{Name: "copy", Step: Typed[copyConfig](copyStep), Replay: true},
		{Name: "delete", Step: Typed[deleteConfig](deleteStep), Replay: true},
		{Name: "fail", Step: Typed[failConfig](fail)},
		{Name: "file-write", Step: Typed[fileWriteConfig](fileWrite), Replay: true},
		{Name: "git-clear", Step: Typed[pathConfig](gitClear), Replay: true},
		{
			Name: "git-clone", Step: Typed[gitCloneConfig](gitClone), Replay: true, Outputs: []string{"commits"},
			Differences: map[string]model.StepDifference{
				"insecureSkipTLSVerify": refused(noTLSSkip),
				"author.signingKey":     refused(noSigning),
				"blobless": accepted("Caravan checks work trees out of a mirror it keeps of the whole repository; " +
					"a work tree reads only the files it checks out, so the result is the same"),
			},
		},
		{
			Name: "git-commit", Step: Typed[gitCommitConfig](gitCommit), Replay: true, Outputs: []string{"commit"},
			Differences: map[string]model.StepDifference{"author.signingKey": refused(noSigning)},
		},
		{
			Name: "git-merge-pr", Step: Typed[mergePRConfig](gitMergePR), Effects: true, WaitsForPullRequest: true, Outputs: []string{"commit", "pr"},
			Differences: map[string]model.StepDifference{"insecureSkipTLSVerify": refused(noTLSSkip)},
		},
		{
			Name: "git-open-pr", Step: Typed[openPRConfig](gitOpenPR), Effects: true, Outputs: []string{"pr"},
			Differences: map[string]model.StepDifference{"insecureSkipTLSVerify": refused(noTLSSkip)},
		},
		{Name: "git-push", Step: Typed[pushConfig](gitPush), Effects: true, Outputs: []string{"branch", "commit", "commitURL", "repoURL"}},
		{Name: "git-tag", Step: Typed[gitTagConfig](gitTag), Replay: true, Outputs: []string{"tag", "commit"}},
		{
			Name: "git-wait-for-pr", Step: Typed[waitPRConfig](gitWaitForPR), Effects: true, WaitsForPullRequest: true, Outputs: []string{"commit", "pr"},
			Differences: map[string]model.StepDifference{"insecureSkipTLSVerify": refused(noTLSSkip)},
		},
		{
			Name: "github-push", Step: Typed[githubPushConfig](githubPush), Effects: true, Outputs: []string{"branch", "commit", "commitURL", "repoURL"},
			Differences: map[string]model.StepDifference{"insecureSkipTLSVerify": refused(noTLSSkip)},
		},
		{Name: "helm-template", Step: Typed[helmTemplateConfig](helmTemplate), Replay: true},
		{Name: "helm-update-chart", Step: Typed[helmUpdateChartConfig](helmUpdateChart), Replay: true, Outputs: []string{"commitMessage"}},
		{
			Name: "http", Step: Typed[httpConfig](httpStep), Effects: true,
			Differences: map[string]model.StepDifference{
				"proxy": refused("requests leave through Caravan's egress policy; a proxy per step is not supported"),
			},
		},
		{Name: "http-download", Step: Typed[httpDownloadConfig](httpDownload)},
		{Name: "json-parse", Step: Typed[parseConfig](jsonParse)},
		{Name: "json-update", Step: Typed[updateConfig](jsonUpdate), Replay: true, Outputs: []string{"commitMessage"}},
		{
			Name: "kustomize-build", Step: Typed[kustomizeBuildConfig](kustomizeBuild), Replay: true,
			Differences: map[string]model.StepDifference{
				"plugin": refused("kustomize inflates Helm charts by running the helm program, which would read the work dir outside " +
					"Caravan's file-system boundary; render charts with helm-template instead"),
			},
		},
		{Name: "kustomize-set-image", Step: Typed[kustomizeSetImageConfig](kustomizeSetImage), Replay: true, Outputs: []string{"commitMessage"}},
		{Name: "oci-download", Step: Typed[ociDownloadConfig](ociDownload)},
		{Name: "oci-push", Step: Typed[ociPushConfig](ociPush), Effects: true, Outputs: []string{"image", "digest", "tag"}},
		{Name: "set-freight-alias", Step: Typed[setFreightAliasConfig](setFreightAlias), Effects: true},
		{Name: "set-metadata", Step: Typed[setMetadataConfig](setMetadata), Effects: true},
		{Name: "tar", Step: Typed[tarConfig](tarStep), Replay: true},
		{Name: "toml-parse", Step: Typed[parseConfig](tomlParse)},
		{Name: "toml-update", Step: Typed[updateConfig](tomlUpdate), Replay: true, Outputs: []string{"commitMessage"}},
		{Name: "untar", Step: Typed[untarConfig](untarStep), Replay: true},
		{Name: "yaml-merge", Step: Typed[yamlMergeConfig](yamlMerge), Replay: true, Outputs: []string{"commitMessage"}},
		{Name: "yaml-parse", Step: Typed[parseConfig](yamlParse)},
		{Name: "yaml-update", Step: Typed[updateConfig](yamlUpdate), Replay: true, Outputs: []string{"commitMessage"}},
	}
}
