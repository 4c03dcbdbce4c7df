package http1

// Default limits. They follow nginx's large_client_header_buffers (8 KiB per
// line) and Apache's LimitRequestFields (100), with a header block budget well
// under net/http's 1 MiB because a reader loop holds one such buffer per
// connection that is mid-request.
const (
	// DefaultMaxRequestLine bounds the request line; over it → 414.
	DefaultMaxRequestLine = 8 << 10
	// DefaultMaxHeaderBytes bounds the whole header block; over it → 431.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxHeaders bounds the number of field lines; over it → 431.
	DefaultMaxHeaders = 100
	// DefaultMaxTrailerBytes bounds a chunked body's trailer section; over it → 431.
	DefaultMaxTrailerBytes = 8 << 10
)

// Limits bounds what one request may use; zero fields take the Default*
// values. Each limit maps to one status and one sentinel error.
type Limits struct {
	MaxRequestLine int // bytes of method+target+version line; over → ErrURITooLong (414)
	MaxHeaderBytes int // whole header block incl. request line; over → ErrHeadersTooLarge (431)
	MaxHeaders     int // number of header fields; over → ErrHeadersTooLarge (431)
}

// HeaderBytes is the most a header block may take, the default if
// MaxHeaderBytes is not set: the most a reader buffers for one head.
func (l *Limits) HeaderBytes() int { return l.maxHeaderBytes() }

func (l *Limits) maxRequestLine() int {
	if l.MaxRequestLine > 0 {
		return l.MaxRequestLine
	}
	return DefaultMaxRequestLine
}

func (l *Limits) maxHeaderBytes() int {
	if l.MaxHeaderBytes > 0 {
		return l.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

func (l *Limits) maxHeaders() int {
	if l.MaxHeaders > 0 {
		return l.MaxHeaders
	}
	return DefaultMaxHeaders
}
