package http1

import "testing"

func TestLimitsDefaults(t *testing.T) {
	var zero Limits
	if zero.maxRequestLine() != DefaultMaxRequestLine || zero.maxHeaderBytes() != DefaultMaxHeaderBytes || zero.maxHeaders() != DefaultMaxHeaders {
		t.Error("zero Limits must take the defaults")
	}
	neg := Limits{MaxRequestLine: -1, MaxHeaderBytes: -1, MaxHeaders: -1}
	if neg.maxRequestLine() != DefaultMaxRequestLine || neg.maxHeaderBytes() != DefaultMaxHeaderBytes || neg.maxHeaders() != DefaultMaxHeaders {
		t.Error("negative Limits must take the defaults")
	}
	set := Limits{MaxRequestLine: 1, MaxHeaderBytes: 2, MaxHeaders: 3}
	if set.maxRequestLine() != 1 || set.maxHeaderBytes() != 2 || set.maxHeaders() != 3 {
		t.Error("set Limits must be used as given")
	}
	var d ChunkedDecoder
	if d.maxTrailerBytes() != DefaultMaxTrailerBytes {
		t.Error("zero MaxTrailerBytes must take the default")
	}
}
