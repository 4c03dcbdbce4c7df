package http1

import (
	"strings"
	"testing"
)

// TestSentinels pins each sentinel's status: the lead's reader loop and the
// writer's error pages rely on StatusOf, so a change here is an API change.
func TestSentinels(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{ErrURITooLong, 414},
		{ErrMalformedRequestLine, 400},
		{ErrBadMethod, 400},
		{ErrBadTarget, 400},
		{ErrBadVersion, 400},
		{ErrVersionNotSupported, 505},
		{ErrHeadersTooLarge, 431},
		{ErrBareLF, 400},
		{ErrObsFold, 400},
		{ErrBadFieldName, 400},
		{ErrBadFieldValue, 400},
		{ErrMissingHost, 400},
		{ErrDuplicateHost, 400},
		{ErrBadHost, 400},
		{ErrExpectationFailed, 417},
		{ErrBadContentLength, 400},
		{ErrConflictingFraming, 400},
		{ErrTransferEncodingHTTP10, 400},
		{ErrUnknownTransferCoding, 501},
		{ErrMalformedChunk, 400},
		{ErrChunkOverhead, 400},
		{ErrChunkSizeOverflow, 413},
		{ErrTrailerTooLarge, 431},
	} {
		if got := StatusOf(tc.err); got != tc.status {
			t.Errorf("StatusOf(%v) = %d, want %d", tc.err, got, tc.status)
		}
		if !strings.HasPrefix(tc.err.Error(), "quartet: ") {
			t.Errorf("%q lacks the quartet: prefix", tc.err)
		}
	}
}
