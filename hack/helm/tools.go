//go:build tools

// Package tools pins helm for hack/helm.sh.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
