//go:build !linux

package index

// adviseHugePages does nothing outside Linux.
func adviseHugePages[T any](s []T) {}

// unadviseHugePages does nothing outside Linux.
func unadviseHugePages[T any](s []T) {}
