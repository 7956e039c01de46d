{{/* The records namespace: recordsNamespace or the release's namespace. */}}
{{- define "meterr.recordsNamespace" -}}
{{- default .Release.Namespace .Values.recordsNamespace -}}
{{- end -}}

{{- define "meterr.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels of every object; "component" is set by the caller. */}}
{{- define "meterr.labels" -}}
app.kubernetes.io/name: meterr-operator
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: meterr-operator
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels: the same as config/ uses. */}}
{{- define "meterr.selectorLabels" -}}
app.kubernetes.io/name: meterr-operator
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "meterr.authServer.tlsSecret" -}}
{{- default (printf "%s-auth-server-tls" .Values.namePrefix) .Values.authServer.tls.secretName -}}
{{- end -}}

{{/* Pod security context and container security context, as in config/. */}}
{{- define "meterr.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "meterr.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
