{{- define "attache.name" -}}attache{{- end -}}

{{- define "attache.fullname" -}}
{{- if contains "attache" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-attache" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "attache.labels" -}}
app.kubernetes.io/name: attache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "attache.selectorLabels" -}}
app.kubernetes.io/name: attache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "attache.image" -}}
{{ .Values.operator.image.repository | default (printf "%s/attache-operator" .Values.image.registry) }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "attache.sidecarImage" -}}
{{ .Values.sidecar.image.repository | default (printf "%s/attache-sidecar" .Values.image.registry) }}:{{ .Values.sidecar.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "attache.webhookSecret" -}}{{ include "attache.fullname" . }}-webhook-tls{{- end -}}
{{- define "attache.webhookName" -}}{{ include "attache.fullname" . }}{{- end -}}
