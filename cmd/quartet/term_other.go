//go:build !linux

package main

import "io"

// isTerminal: Quartet runs on Linux (see internal/poll); elsewhere get
// draws no progress bar.
func isTerminal(io.Writer) bool { return false }
