{{/* The chart name, for app.kubernetes.io/name. */}}
{{- define "kubevirt-reboot-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object: the release name when it contains the chart name. */}}
{{- define "kubevirt-reboot-webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pods and selectors. */}}
{{- define "kubevirt-reboot-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubevirt-reboot-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every object. */}}
{{- define "kubevirt-reboot-webhook.labels" -}}
{{ include "kubevirt-reboot-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "kubevirt-reboot-webhook.secretName" -}}
{{- default (printf "%s-tls" (include "kubevirt-reboot-webhook.fullname" .)) .Values.certificate.secretName }}
{{- end }}

{{/* The image: a digest when given, else the tag, else the chart's appVersion. */}}
{{- define "kubevirt-reboot-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/*
The caBundle for certificate.source=secret (base64 of PEM): the caCert value,
else ca.crt of the existing Secret. `helm template` cannot read the Secret and
renders "" (the placeholder of manifests/base); an install against a cluster
without any CA fails here instead of registering webhooks that no API server
can call.
*/}}
{{- define "kubevirt-reboot-webhook.caBundle" -}}
{{- if .Values.certificate.caCert }}
{{- .Values.certificate.caCert | b64enc }}
{{- else }}
{{- $secretName := include "kubevirt-reboot-webhook.secretName" . }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace $secretName }}
{{- $ca := "" }}
{{- if $secret }}{{ $ca = index (default dict $secret.data) "ca.crt" | default "" }}{{ end }}
{{- if and (not $ca) (lookup "v1" "Namespace" "" "kube-system") }}
{{- fail (printf "certificate.source=secret needs the CA that signed the serving certificate: set certificate.caCert (PEM, e.g. --set-file certificate.caCert=ca.crt) or put ca.crt into Secret %s/%s" .Release.Namespace $secretName) }}
{{- end }}
{{- $ca }}
{{- end }}
{{- end }}

{{/* The webhook configurations' clientConfig and, with cert-manager, its annotation. */}}
{{- define "kubevirt-reboot-webhook.clientConfig" -}}
service:
  namespace: {{ .root.Release.Namespace }}
  name: {{ include "kubevirt-reboot-webhook.fullname" .root }}
  port: 443
  path: {{ .path }}
{{- if eq .root.Values.certificate.source "secret" }}
caBundle: {{ include "kubevirt-reboot-webhook.caBundle" .root | quote }}
{{- end }}
{{- end }}

{{- define "kubevirt-reboot-webhook.webhookAnnotations" -}}
{{- if eq .Values.certificate.source "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "kubevirt-reboot-webhook.fullname" . }}
{{- end }}
{{- end }}

{{- define "kubevirt-reboot-webhook.namespaceSelector" -}}
{{- if .Values.webhooks.namespaceSelector }}
{{- toYaml .Values.webhooks.namespaceSelector }}
{{- else }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ concat .Values.webhooks.excludedNamespaces (list .Release.Namespace) | uniq | toJson }}
{{- end }}
{{- end }}

{{/*
matchConditions of a webhook ("validating" or "mutating"), rendered when
webhooks.matchConditions is true. files/match-conditions.json is generated
from manifests/base by `make chart-files` (tests/chart.rs fails when it is
stale); compat mode keeps the same conditions, as components/compat does.
*/}}
{{- define "kubevirt-reboot-webhook.matchConditions" -}}
{{- if .root.Values.webhooks.matchConditions }}
{{- $conditions := index (.root.Files.Get "files/match-conditions.json" | fromJson) .webhook }}
{{- if $conditions }}
matchConditions:
  {{- toYaml $conditions | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The `serve` arguments; defaults first, in the order of manifests/base. */}}
{{- define "kubevirt-reboot-webhook.args" -}}
- serve
- --listen=0.0.0.0:8443
- --metrics-listen=0.0.0.0:8080
- --tls-cert=/etc/webhook/tls/tls.crt
- --tls-key=/etc/webhook/tls/tls.key
- --log-format={{ .Values.logFormat }}
- --shutdown-delay=5s
- --drain-timeout=25s
{{- if ne .Values.bootonce "native" }}
- --bootonce={{ .Values.bootonce }}
{{- end }}
{{- if ne .Values.mode "enforce" }}
- --mode={{ .Values.mode }}
{{- end }}
{{- if ne .Values.kubevirtNamespace "kubevirt" }}
- {{ printf "--kubevirt-namespace=%s" .Values.kubevirtNamespace | quote }}
{{- end }}
{{- if .Values.featureGates.static }}
- {{ printf "--feature-gates=%s" (join "," .Values.featureGates.enabled) | quote }}
{{- end }}
{{- range .Values.trustedUsers }}
- {{ printf "--trusted-user=%s" . | quote }}
{{- end }}
{{- range .Values.trustedGroups }}
- {{ printf "--trusted-group=%s" . | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- if .Values.mtls.clientCAConfigMap }}
- --client-ca=/etc/webhook/client-ca/ca.crt
{{- range .Values.mtls.clientNames }}
- {{ printf "--client-name=%s" . | quote }}
{{- end }}
{{- end }}
{{- end }}
