{{/* The chart name, overridable. */}}
{{- define "fdo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, the prefix of every object's name. A release named
like the chart gets the bare chart name.
*/}}
{{- define "fdo.fullname" -}}
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

{{/*
The name of one of the release's objects: <fullname>-<suffix>, at most 63
characters (a Service's or label value's limit) whatever the release name.
When <fullname>-<suffix> is longer, the full name is cut and a hash of it
added, so that releases whose names differ only at the end still get
different names: <cut fullname>-<6 hex digits>-<suffix>. Called with
(list $ "receiver").
*/}}
{{- define "fdo.suffixedName" -}}
{{- include "fdo.cutName" (list (index . 0) (index . 1) 63) }}
{{- end }}

{{/*
fdo.suffixedName with a limit other than 63: called with (list $ "receiver"
52) for a StatefulSet, whose pods carry the label
controller-revision-hash=<StatefulSet name>-<up to 10 characters>, so a
StatefulSet name over 52 characters gives pods the API server refuses.
*/}}
{{- define "fdo.cutName" -}}
{{- $full := include "fdo.fullname" (index . 0) }}
{{- $suffix := index . 1 }}
{{- $limit := int (index . 2) }}
{{- if le (add (len $full) (len $suffix) 1) $limit }}
{{- printf "%s-%s" $full $suffix }}
{{- else }}
{{- $keep := int (sub $limit (add (len $suffix) 8)) }}
{{- printf "%s-%s-%s" ($full | trunc $keep | trimSuffix "-") ($full | sha256sum | trunc 6) $suffix }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "fdo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fdo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the release's pods, of both roles. */}}
{{- define "fdo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fdo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select one role's pods. Called with (list $ "receiver") or
(list $ "controllers").
*/}}
{{- define "fdo.componentSelectorLabels" -}}
{{ include "fdo.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
A role's ServiceAccount: <fullname>-<role> unless named. Called with
(list $ "receiver") or (list $ "controllers").
*/}}
{{- define "fdo.serviceAccountName" -}}
{{- $root := index . 0 }}
{{- $role := index . 1 }}
{{- $key := printf "%sName" $role }}
{{- $name := get $root.Values.serviceAccount $key }}
{{- if $root.Values.serviceAccount.create }}
{{- default (include "fdo.suffixedName" (list $root $role)) $name }}
{{- else }}
{{- required (printf "serviceAccount.%s is required when serviceAccount.create is false" $key) $name }}
{{- end }}
{{- end }}

{{/* The manager image, by digest when one is given. */}}
{{- define "fdo.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the receiver's serving certificate. */}}
{{- define "fdo.receiverTLSSecret" -}}
{{- default (include "fdo.suffixedName" (list . "receiver-tls")) .Values.receiver.tls.secretName }}
{{- end }}

{{/* The receiver Service's port: receiver.service.port, else 443 or 80. */}}
{{- define "fdo.receiverServicePort" -}}
{{- if .Values.receiver.service.port }}
{{- .Values.receiver.service.port | int }}
{{- else if .Values.receiver.tls.enabled }}443
{{- else }}80
{{- end }}
{{- end }}

{{/*
The seconds in a Go duration string such as 5s, 1m30s or 500ms (the format
values.schema.json admits for durations), as a float.
*/}}
{{- define "fdo.seconds" -}}
{{- $units := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $n := regexFind "^[0-9]+(\\.[0-9]+)?" . }}
{{- $total = addf $total (mulf (float64 $n) (get $units (trimPrefix $n .))) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* Refuses value combinations that would install something broken. */}}
{{- define "fdo.validate" -}}
{{- if and (gt (int .Values.controllers.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "controllers.replicaCount > 1 needs leaderElection.enabled: without it every replica runs the controllers" }}
{{- end }}
{{- /* A stopping receiver answers for shutdownDelay, then finishes the
callbacks in flight (up to 10 s), replays its spool once more (5 s) and
writes its status: 20 s past the delay must fit the grace period, or the
kubelet kills it mid-shutdown. */}}
{{- $delay := include "fdo.seconds" .Values.receiver.shutdownDelay | float64 }}
{{- if ge (addf $delay 20) (float64 .Values.receiver.terminationGracePeriodSeconds) }}
{{- fail (printf "receiver.shutdownDelay %s + 20s must stay below receiver.terminationGracePeriodSeconds (%d): after the delay the receiver still finishes the callbacks in flight, replays its spool and writes its status. Raise terminationGracePeriodSeconds above %d or shorten the delay" .Values.receiver.shutdownDelay (int .Values.receiver.terminationGracePeriodSeconds) (int (ceil (addf $delay 20)))) }}
{{- end }}
{{- if and .Values.receiver.spool.persistence.enabled (not .Values.receiver.spool.enabled) }}
{{- fail "receiver.spool.persistence.enabled needs receiver.spool.enabled" }}
{{- end }}
{{- if and .Values.receiver.tls.certManager.enabled (not .Values.receiver.tls.enabled) }}
{{- fail "receiver.tls.certManager.enabled needs receiver.tls.enabled" }}
{{- end }}
{{- if and .Values.receiver.tls.enabled (not .Values.receiver.tls.certManager.enabled) (not .Values.receiver.tls.secretName) }}
{{- fail "receiver.tls.enabled needs receiver.tls.secretName (an existing kubernetes.io/tls Secret) or receiver.tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.receiver.tls.certManager.enabled (not .Values.receiver.tls.certManager.issuerRef.name) }}
{{- fail "receiver.tls.certManager.enabled needs receiver.tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts" }}
{{- end }}
{{- /* The IM backend checks the certificate against the public host name;
the default dnsNames are the Service's in-cluster names, right only behind
an Ingress. */}}
{{- if and .Values.receiver.tls.certManager.enabled (has .Values.receiver.service.type (list "LoadBalancer" "NodePort")) (not .Values.receiver.tls.certManager.dnsNames) }}
{{- fail (printf "receiver.service.type %s with receiver.tls.certManager needs receiver.tls.certManager.dnsNames: the public host name in the callback URL, which the IM backend checks the certificate against" .Values.receiver.service.type) }}
{{- end }}
{{- end }}
