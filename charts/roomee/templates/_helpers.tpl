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

{{/* The public URL clients use: publicUrl, else the first Ingress host (https when a TLS entry
covers it), else http://localhost:8080 (a port-forward; NOTES.txt says so). */}}
{{- define "roomee.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $host := first .Values.ingress.hosts -}}
{{- $tls := false -}}
{{- range .Values.ingress.tls }}{{ if has $host (.hosts | default list) }}{{ $tls = true }}{{ end }}{{ end -}}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host -}}
{{- else -}}
http://localhost:8080
{{- end -}}
{{- end -}}

{{/* Name of the Secret the platform's secrets come from: secrets.existingSecret or the generated one. */}}
{{- define "roomee.secretName" -}}
{{- default (printf "%s-secrets" (include "roomee.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* "true" when the chart runs its own PostgreSQL (no existing Secret, no external database). */}}
{{- define "roomee.postgresql.enabled" -}}
{{- if and .Values.postgresql.enabled (not .Values.secrets.existingSecret) (not .Values.externalDatabase.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the chart runs its own RabbitMQ (no existing Secret, no external broker). */}}
{{- define "roomee.rabbitmq.enabled" -}}
{{- if and .Values.rabbitmq.enabled (not .Values.secrets.existingSecret) (not .Values.externalBroker.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "roomee.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "roomee.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "roomee.rabbitmq.fullname" -}}
{{- printf "%s-rabbitmq" (include "roomee.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Where the shared database URL comes from, as "secret-name/key": externalDatabase.existingSecret,
else secrets.existingSecret, else the generated Secret of the bundled PostgreSQL. No source fails
the render: the targets never fall back to a SQLite file per pod.
*/}}
{{- define "roomee.databaseUrlRef" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- printf "%s/%s" .Values.externalDatabase.existingSecret .Values.externalDatabase.urlKey -}}
{{- else if .Values.secrets.existingSecret -}}
{{- printf "%s/%s" .Values.secrets.existingSecret (get .Values.secrets.required "ROOMEE_DATABASE_URL" | default "database-url") -}}
{{- else if include "roomee.postgresql.enabled" . -}}
{{- printf "%s/database-url" (include "roomee.secretName" .) -}}
{{- else -}}
{{- fail "postgresql.enabled is false and no shared database is given: set externalDatabase.existingSecret (a Secret holding the PostgreSQL URL) or secrets.existingSecret (with database-url), or turn postgresql.enabled back on; a target never runs on a SQLite file of its own pod" -}}
{{- end -}}
{{- end -}}

{{/* Where the shared broker URL comes from, as "secret-name/key" (same order as the database). */}}
{{- define "roomee.brokerUrlRef" -}}
{{- if .Values.externalBroker.existingSecret -}}
{{- printf "%s/%s" .Values.externalBroker.existingSecret .Values.externalBroker.urlKey -}}
{{- else if .Values.secrets.existingSecret -}}
{{- printf "%s/%s" .Values.secrets.existingSecret (get .Values.secrets.required "ROOMEE_BROKER_URL" | default "broker-url") -}}
{{- else if include "roomee.rabbitmq.enabled" . -}}
{{- printf "%s/broker-url" (include "roomee.secretName" .) -}}
{{- else -}}
{{- fail "rabbitmq.enabled is false and no shared broker is given: set externalBroker.existingSecret (a Secret holding the AMQP URL) or secrets.existingSecret (with broker-url), or turn rabbitmq.enabled back on; targets in separate pods only exchange events through a shared broker" -}}
{{- end -}}
{{- end -}}

{{/* A secretKeyRef env entry: dict "name" ENV "ref" "secret/key" ["optional" true]. */}}
{{- define "roomee.secretEnv" -}}
{{- $parts := splitn "/" 2 .ref }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ $parts._0 }}
      key: {{ $parts._1 }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Render-time checks of values that depend on each other; each failure names its value. */}}
{{- define "roomee.validate" -}}
{{- if and .Values.targets.media.enabled (eq .Values.media.storage "local") (gt (int .Values.targets.media.replicas) 1) -}}
{{- fail (printf "targets.media.replicas is %v with media.storage=local: each replica would hold its own files. Set media.storage=gcs (media.gcs.bucket) or targets.media.replicas=1" .Values.targets.media.replicas) -}}
{{- end -}}
{{- if and (eq .Values.media.storage "gcs") (not .Values.media.gcs.bucket) -}}
{{- fail "media.gcs.bucket is required with media.storage=gcs" -}}
{{- end -}}
{{- if and (eq .Values.email.backend "smtp") (not .Values.email.smtp.host) -}}
{{- fail "email.smtp.host is required with email.backend=smtp" -}}
{{- end -}}
{{- if and .Values.email.smtp.starttls .Values.email.smtp.implicitTls -}}
{{- fail "email.smtp.starttls and email.smtp.implicitTls exclude each other: STARTTLS upgrades a plain connection (port 587), implicit TLS starts encrypted (port 465)" -}}
{{- end -}}
{{- if and (eq .Values.push.backend "onesignal") (not .Values.push.onesignal.appId) -}}
{{- fail "push.onesignal.appId is required with push.backend=onesignal (its REST API key goes into the Secret as onesignal-api-key)" -}}
{{- end -}}
{{- if and .Values.secrets.existingSecret (not .Values.secrets.signingKeysSecret) (not (hasKey .Values.config "ROOMEE_ALLOW_UNSAFE_DEFAULTS")) -}}
{{- fail "secrets.signingKeysSecret is required with secrets.existingSecret: the auth target refuses to start on a database without shared signing keys (set config.ROOMEE_ALLOW_UNSAFE_DEFAULTS for a throwaway cluster)" -}}
{{- end -}}
{{- $_ := include "roomee.databaseUrlRef" . -}}
{{- $_ := include "roomee.brokerUrlRef" . -}}
{{- end -}}

{{/*
Environment of every Roomee container (targets, operator, migrations): the configuration, where
each target answers, and the secrets by reference (never a value), all from the one Secret
(generated or existing) and the external database/broker Secrets.
*/}}
{{- define "roomee.env" -}}
{{- include "roomee.validate" . }}
- name: ROOMEE_HOST
  value: "0.0.0.0"
- name: ROOMEE_PORT
  value: {{ .Values.containerPort | quote }}
- name: ROOMEE_DATA_DIR
  value: /var/lib/roomee
- name: ROOMEE_PUBLIC_URL
  value: {{ include "roomee.publicUrl" . | quote }}
{{- with .Values.signupUrl }}
- name: ROOMEE_SIGNUP_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.resetPasswordUrl }}
- name: ROOMEE_RESET_PASSWORD_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.hotelJoin.url }}
- name: ROOMEE_HOTEL_JOIN_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.hotelJoin.appUrl }}
- name: ROOMEE_HOTEL_JOIN_APP_URL
  value: {{ . | quote }}
{{- end }}
- name: ROOMEE_FORWARDED_ALLOW_IPS
  value: {{ join "," .Values.trustedProxies | quote }}
- name: ROOMEE_QUEUE_TYPE
  value: {{ .Values.queueType | quote }}
- name: ROOMEE_EMAIL_BACKEND
  value: {{ .Values.email.backend | quote }}
- name: ROOMEE_EMAIL_FROM
  value: {{ .Values.email.from | quote }}
{{- if eq .Values.email.backend "smtp" }}
- name: ROOMEE_SMTP_HOST
  value: {{ .Values.email.smtp.host | quote }}
- name: ROOMEE_SMTP_PORT
  value: {{ .Values.email.smtp.port | quote }}
- name: ROOMEE_SMTP_STARTTLS
  value: {{ .Values.email.smtp.starttls | quote }}
- name: ROOMEE_SMTP_IMPLICIT_TLS
  value: {{ .Values.email.smtp.implicitTls | quote }}
{{- with .Values.email.smtp.username }}
- name: ROOMEE_SMTP_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if and (eq .Values.email.backend "sendgrid") .Values.email.sendgrid.url }}
- name: ROOMEE_SENDGRID_URL
  value: {{ .Values.email.sendgrid.url | quote }}
{{- end }}
- name: ROOMEE_MEDIA_STORAGE
  value: {{ .Values.media.storage | quote }}
{{- if eq .Values.media.storage "gcs" }}
- name: ROOMEE_MEDIA_GCS_BUCKET
  value: {{ .Values.media.gcs.bucket | quote }}
{{- with .Values.media.gcs.project }}
- name: ROOMEE_MEDIA_GCS_PROJECT
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: ROOMEE_PUSH_BACKEND
  value: {{ .Values.push.backend | quote }}
{{- if eq .Values.push.backend "onesignal" }}
- name: ROOMEE_ONESIGNAL_APP_ID
  value: {{ .Values.push.onesignal.appId | quote }}
{{- end }}
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
{{- $secret := include "roomee.secretName" . }}
{{- include "roomee.secretEnv" (dict "name" "ROOMEE_DATABASE_URL" "ref" (include "roomee.databaseUrlRef" .)) }}
{{- include "roomee.secretEnv" (dict "name" "ROOMEE_BROKER_URL" "ref" (include "roomee.brokerUrlRef" .)) }}
{{- range $env, $key := .Values.secrets.required }}
{{- if not (has $env (list "ROOMEE_DATABASE_URL" "ROOMEE_BROKER_URL")) }}
{{- include "roomee.secretEnv" (dict "name" $env "ref" (printf "%s/%s" $secret $key)) }}
{{- end }}
{{- end }}
{{- range $env, $key := .Values.secrets.optional }}
{{- include "roomee.secretEnv" (dict "name" $env "ref" (printf "%s/%s" $secret $key) "optional" true) }}
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
