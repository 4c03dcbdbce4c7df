//go:build !linux

package poll

import (
	"errors"
	"time"
)

// No backend on this platform (why: see the package comment). openPoller
// fails, so no Poller exists and the other functions are never reached.

type backend struct{}

var (
	errBadFD         = errors.New("quartet: poll: no backend")
	errNotRegistered = errBadFD
)

func openPoller() (int, error) { return -1, Unsupported("poll") }

func closeFD(int) error { return errBadFD }

func (*backend) ctl(int, ctlOp, int, Interest, Token) error { return errBadFD }

func (*backend) poll(int) (int, error) { return 0, errBadFD }

func (*backend) block(int, time.Duration) (int, error) { return 0, errBadFD }

func (*backend) collect(dst []Event, _ int) []Event { return dst }

func (*backend) pending(int) bool { return false }
