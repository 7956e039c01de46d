//go:build tools

// Package coredns pins CoreDNS, the cluster's DNS server.
package coredns

import (
	_ "github.com/coredns/coredns"
)
