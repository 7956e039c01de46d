// Package config embeds the manifests the binary itself applies: the CRD
// (for `meterr-operator dev`) and the samples.
package config

import "embed"

// CRDs holds config/crd/bases.
//
//go:embed crd/bases/*.yaml
var CRDs embed.FS

// Samples holds the sample MeterrAPIKeys.
//
//go:embed samples/auth_*.yaml
var Samples embed.FS
