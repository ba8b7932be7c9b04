{{/* Helpers in the prometheus-community charts' style. */}}

{{/* Expand the name of the chart. */}}
{{- define "roomee.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Create a default fully qualified app name, truncated to 63 characters (DNS names). If the release
name contains the chart name it is used as the full name.
*/}}
{{- define "roomee.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Chart name and version, as used by the chart label. */}}
{{- define "roomee.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels. */}}
{{- define "roomee.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roomee.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Common labels. */}}
{{- define "roomee.labels" -}}
helm.sh/chart: {{ include "roomee.chart" . }}
{{ include "roomee.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: roomee
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Name of a target's resources: dict "root" $ "target" NAME. */}}
{{- define "roomee.componentName" -}}
{{- printf "%s-%s" (include "roomee.fullname" .root) .target | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one target: dict "root" $ "target" NAME. */}}
{{- define "roomee.componentSelectorLabels" -}}
{{ include "roomee.selectorLabels" .root }}
app.kubernetes.io/component: {{ .target }}
{{- end -}}

{{/* Labels of one target: dict "root" $ "target" NAME. */}}
{{- define "roomee.componentLabels" -}}
{{ include "roomee.labels" .root }}
app.kubernetes.io/component: {{ .target }}
{{- end -}}

{{/* The image reference. */}}
{{- define "roomee.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* ServiceAccount of the targets. */}}
{{- define "roomee.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "roomee.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount of the operator. */}}
{{- define "roomee.operatorServiceAccountName" -}}
{{- default (printf "%s-operator" (include "roomee.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{/* The public URL clients use. */}}
{{- define "roomee.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "https://%s" (first .Values.ingress.hosts) -}}
{{- else -}}
{{- printf "http://%s-auth:%v" (include "roomee.fullname" .) .Values.service.port -}}
{{- end -}}
{{- end -}}

{{/*
Environment of every Roomee container (targets, operator, migrations): the configuration, where
each target answers, and the secrets by reference. Rendered inline rather than from a ConfigMap so
the pre-install migrations hook, which runs before any ordinary resource exists, gets it too.
*/}}
{{- define "roomee.env" -}}
- name: ROOMEE_HOST
  value: "0.0.0.0"
- name: ROOMEE_PORT
  value: {{ .Values.containerPort | quote }}
- name: ROOMEE_DATA_DIR
  value: /var/lib/roomee
- name: ROOMEE_PUBLIC_URL
  value: {{ include "roomee.publicUrl" . | quote }}
{{- $root := . }}
{{- range $name, $target := .Values.targets }}
{{- if $target.enabled }}
- name: ROOMEE_{{ upper $name }}_URL
  value: {{ printf "http://%s:%v" (include "roomee.componentName" (dict "root" $root "target" $name)) $root.Values.service.port | quote }}
{{- end }}
{{- end }}
{{- if .Values.migrations.enabled }}
- name: ROOMEE_AUTO_MIGRATE
  value: "false"
{{- end }}
{{- range $key, $value := .Values.config }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.secrets.existingSecret }}
{{- range $env, $key := $root.Values.secrets.required }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- range $env, $key := $root.Values.secrets.optional }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.existingSecret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Writable scratch volumes of a read-only root filesystem. */}}
{{- define "roomee.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
{{- end -}}

{{- define "roomee.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/roomee
{{- end -}}
