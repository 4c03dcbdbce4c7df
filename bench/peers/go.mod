module github.com/quartet-server/quartet/bench/peers

go 1.26.0

require (
	github.com/panjf2000/gnet/v2 v2.10.0
	github.com/quartet-server/quartet v0.0.0
	github.com/valyala/fasthttp v1.62.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/andybalholm/brotli v1.2.0 // indirect
	github.com/klauspost/compress v1.18.2 // indirect
	github.com/panjf2000/ants/v2 v2.12.1 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	gopkg.in/natefinch/lumberjack.v2 v2.2.1 // indirect
)

// gnetmsg answers with Quartet's own codec, from this checkout.
replace github.com/quartet-server/quartet => ../..
