//go:build !linux

package server

// releaseExecutablePages does nothing outside Linux.
func releaseExecutablePages(bool) (int64, error) { return 0, nil }
