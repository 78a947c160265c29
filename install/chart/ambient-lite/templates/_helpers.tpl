{{/* Labels every object carries; uninstall and check find the mesh by them. */}}
{{- define "ambient-lite.labels" -}}
app.kubernetes.io/part-of: ambient-lite
{{- end }}

{{/* image NAME: <hub>/<NAME>:<tag>. */}}
{{- define "ambient-lite.image" -}}
{{ .root.Values.global.hub }}/{{ .name }}:{{ .root.Values.global.tag | toString }}
{{- end }}

{{/* The control plane's address, as the proxies dial it. */}}
{{- define "ambient-lite.istiodAddress" -}}
istiod.{{ .Release.Namespace }}.svc:15012
{{- end }}
