{{/*
Names, labels and the derived numbers every template shares, plus the render-time checks of value
combinations that values.schema.json cannot express (they compare two keys).
*/}}

{{/* Chart name, overridable; 63 characters is the DNS label limit of resource names. */}}
{{- define "uninlu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name: the release name, prefixed with the chart name unless it already contains it. */}}
{{- define "uninlu.fullname" -}}
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

{{- define "uninlu.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: fixed after the first install (a Deployment selector is immutable). */}}
{{- define "uninlu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "uninlu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "uninlu.labels" -}}
helm.sh/chart: {{ include "uninlu.chart" . }}
{{ include "uninlu.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: model-server
app.kubernetes.io/part-of: uninlu
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "uninlu.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "uninlu.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest when a digest is given (each build rolls the pods). */}}
{{- define "uninlu.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* startupProbe failures allowed: ceil(modelLoadTimeoutSeconds / periodSeconds). */}}
{{- define "uninlu.startupFailureThreshold" -}}
{{- $timeout := int .Values.probes.modelLoadTimeoutSeconds }}
{{- $period := int .Values.probes.startup.periodSeconds }}
{{- div (add $timeout $period -1) $period }}
{{- end }}

{{/*
What shutting down takes: the preStop sleep, then server.gracefulShutdownSeconds, the server's
whole budget after SIGTERM (its drain delay, in-flight requests and batcher close are split
inside it: app/contract/shutdown.py).
*/}}
{{- define "uninlu.shutdownSeconds" -}}
{{- add .Values.lifecycle.preStopSleepSeconds .Values.server.gracefulShutdownSeconds }}
{{- end }}

{{/* Grace period: explicit, or the shutdown time + 5 s for the process to exit
(app/contract/shutdown.py termination_grace_period, which the deploying program passes explicitly). */}}
{{- define "uninlu.terminationGracePeriodSeconds" -}}
{{- $needed := int (include "uninlu.shutdownSeconds" .) }}
{{- if kindIs "invalid" .Values.lifecycle.terminationGracePeriodSeconds }}
{{- add $needed 5 }}
{{- else }}
{{- int .Values.lifecycle.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* A decimal as a Kubernetes quantity: 8 -> "8", 0.5 -> "500m". */}}
{{- define "uninlu.quantity" -}}
{{- if eq (float64 (int .)) (float64 .) }}
{{- int . }}
{{- else }}
{{- printf "%dm" (int (round (mulf . 1000) 0)) }}
{{- end }}
{{- end }}

{{/* The smallest replica count the Deployment can have (what a PDB must leave room in). */}}
{{- define "uninlu.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- int .Values.autoscaling.minReplicas }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* A PDB bound as int or "N%" string -> [kind, number]. */}}
{{- define "uninlu.pdbBound" -}}
{{- if kindIs "string" . }}
{{- printf "percent %d" (int (trimSuffix "%" .)) }}
{{- else }}
{{- printf "count %d" (int .) }}
{{- end }}
{{- end }}

{{/*
Checks of combinations, run once from the Deployment template: each names the keys involved and
says how to fix them.
*/}}
{{- define "uninlu.validate" -}}
{{- $a := .Values.autoscaling }}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d): the HPA could never satisfy both; raise maxReplicas or lower minReplicas" (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- if .Values.pdb.enabled }}
{{- $min := int (include "uninlu.minReplicas" .) }}
{{- $source := ternary "autoscaling.minReplicas" "replicaCount" (eq $a.enabled true) }}
{{- if not (kindIs "invalid" .Values.pdb.minAvailable) }}
{{- $b := splitList " " (include "uninlu.pdbBound" .Values.pdb.minAvailable) }}
{{- $n := int (index $b 1) }}
{{- if and (eq (index $b 0) "count") (ge $n $min) }}
{{- fail (printf "pdb.minAvailable (%d) must be lower than %s (%d): otherwise no pod may ever be evicted and every node drain blocks; lower pdb.minAvailable, or use pdb.maxUnavailable" $n $source $min) }}
{{- end }}
{{- if and (eq (index $b 0) "percent") (ge $n 100) }}
{{- fail (printf "pdb.minAvailable (%d%%) must be below 100%%: otherwise no pod may ever be evicted and every node drain blocks" $n) }}
{{- end }}
{{- else }}
{{- if kindIs "invalid" .Values.pdb.maxUnavailable }}
{{- fail "pdb.enabled is true but neither pdb.maxUnavailable nor pdb.minAvailable is set; set pdb.maxUnavailable (e.g. 1)" }}
{{- end }}
{{- $b := splitList " " (include "uninlu.pdbBound" .Values.pdb.maxUnavailable) }}
{{- if eq (int (index $b 1)) 0 }}
{{- fail "pdb.maxUnavailable is 0: no pod could ever be evicted and every node drain would block; use 1 or more (or a percentage above 0%)" }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" .Values.lifecycle.terminationGracePeriodSeconds) }}
{{- $needed := int (include "uninlu.shutdownSeconds" .) }}
{{- if le (int .Values.lifecycle.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "lifecycle.terminationGracePeriodSeconds (%d) must be longer than lifecycle.preStopSleepSeconds + server.gracefulShutdownSeconds (%d), or the kubelet kills the server mid-drain; raise it or leave it null to derive it" (int .Values.lifecycle.terminationGracePeriodSeconds) $needed) }}
{{- end }}
{{- end }}
{{- if lt (int .Values.probes.modelLoadTimeoutSeconds) (int .Values.probes.startup.periodSeconds) }}
{{- fail (printf "probes.modelLoadTimeoutSeconds (%d) is shorter than probes.startup.periodSeconds (%d): the startupProbe budget could not cover model loading" (int .Values.probes.modelLoadTimeoutSeconds) (int .Values.probes.startup.periodSeconds)) }}
{{- end }}
{{- if and (eq .Values.model.source "pvc") (not .Values.model.pvc.claimName) }}
{{- fail "model.source is pvc but model.pvc.claimName is empty: name the PersistentVolumeClaim that holds the checkpoint" }}
{{- end }}
{{- if and $a.enabled (eq $a.engine "keda") $a.textsPerSecondMetric }}
{{- if not $a.keda.serverAddress }}
{{- fail "autoscaling.engine is keda but autoscaling.keda.serverAddress is empty: give the URL of the Prometheus KEDA's prometheus trigger queries, or set autoscaling.textsPerSecondMetric false" }}
{{- end }}
{{- if not $a.keda.query }}
{{- fail "autoscaling.engine is keda but autoscaling.keda.query is empty: give the PromQL of the texts per second offered to the Deployment, all pods together (infra/monitoring.py deployment_texts_query)" }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled is true but ingress.hosts is empty: give at least one host rule" }}
{{- end }}
{{- end }}

{{/* Hardening shared by the server and the download initContainer. */}}
{{- define "uninlu.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.securityContext.runAsUser }}
runAsGroup: {{ int .Values.securityContext.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* resources plus extraResources (e.g. nvidia.com/gpu) in both requests and limits. */}}
{{- define "uninlu.resources" -}}
{{- $res := deepCopy .Values.resources }}
{{- if .Values.extraResources }}
{{- $_ := set $res "requests" (merge (deepCopy .Values.extraResources) (default (dict) $res.requests)) }}
{{- $_ := set $res "limits" (merge (deepCopy .Values.extraResources) (default (dict) $res.limits)) }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/* The model server's container: what the CPU metric of either engine reads (ContainerResource). */}}
{{- define "uninlu.serverContainer" -}}
server
{{- end }}

{{/*
The autoscaler's behaviour of one direction (autoscaling/v2 HPAScalingRules) for the HPA and for
the HPA KEDA owns: a tolerance is written as a quantity string ("0.05"), which both the HPA and
the ScaledObject CRD (integer or string) accept; a YAML float would fail the CRD's schema.
*/}}
{{- define "uninlu.scalingRules" -}}
{{- $rules := deepCopy . }}
{{- if hasKey $rules "tolerance" }}
{{- $_ := set $rules "tolerance" (toString $rules.tolerance) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/* PromQL regex of the predict route templates (app/serving/metrics.py PREDICT_ROUTES; a test pins them). */}}
{{- define "uninlu.predictRoutes" -}}
/predict|/predict/batch
{{- end }}
