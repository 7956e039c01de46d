//go:build tools

// Package runc pins runc, the OCI runtime the containerd shim runs.
package runc

import (
	_ "github.com/opencontainers/runc"
)
