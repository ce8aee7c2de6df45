{{/* The image reference: repository and tag, the tag defaulting to the chart's appVersion. */}}
{{- define "waypoint.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels every object carries; the same as the plain manifests in deploy/. */}}
{{- define "waypoint.labels" -}}
app.kubernetes.io/name: waypoint
app.kubernetes.io/component: {{ . }}
{{- end -}}
