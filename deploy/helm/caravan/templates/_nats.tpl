{{- define "caravan.natsConf" -}}
{{- $name := printf "%s-nats" (include "caravan.fullname" .) -}}
server_name: $POD_NAME
listen: 0.0.0.0:4222
http: 0.0.0.0:8222
pid_file: /var/run/nats/nats.pid
lame_duck_duration: 30s
lame_duck_grace_period: 10s
{{- if include "caravan.natsUsers" . }}
{{- $perms := .Files.Get "files/nats-permissions.yaml" | fromYaml }}
# One user per Caravan component with exactly its permissions
# (files/nats-permissions.yaml, generated from service.NATSRules); the
# passwords come from the environment (the Secret {{ include "caravan.natsUsersSecret" . }}).
authorization {
  users: [
    {{- range $c := list "gateway" "discovery" "promoter" "verifier" "setup" }}
    {{- $p := required (printf "files/nats-permissions.yaml: no user %s" $c) (get $perms $c) }}
    {user: {{ index $.Values.nats.users.names $c | quote }}, password: ${{ include "caravan.natsPasswordVar" $c }}, permissions: {publish: {allow: [{{ include "caravan.natsList" $p.publish }}]}, subscribe: {allow: [{{ include "caravan.natsList" $p.subscribe }}]}}}
    {{- end }}
  ]
}
{{- end }}
jetstream {
  store_dir: /data
  max_memory_store: {{ .Values.nats.maxMemoryStore }}
  max_file_store: {{ .Values.nats.maxFileStore }}
}
cluster {
  name: {{ $name }}
  listen: 0.0.0.0:6222
  routes: [
    {{- range $i := until (int .Values.nats.replicas) }}
    nats://{{ $name }}-{{ $i }}.{{ $name }}-headless:6222
    {{- end }}
  ]
}
{{- end -}}

{{/* A list of subjects as quoted NATS configuration strings. */}}
{{- define "caravan.natsList" -}}
{{- $q := list -}}
{{- range . }}{{ $q = append $q (quote .) }}{{ end -}}
{{- join ", " $q -}}
{{- end -}}
