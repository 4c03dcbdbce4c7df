// Package runtime assembles Quartet's four stages into a server. Read
// pipeline.go first: it is the whole pipeline on one screen, from the
// listening socket to the writer that hands a keep-alive connection back to
// its reader.
package runtime
