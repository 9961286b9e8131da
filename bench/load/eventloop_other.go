//go:build !linux

package load

import (
	"context"
	"fmt"
	"runtime"
)

// eventLoops refuses: the generator's event loops need Linux's epoll and timerfd, and the
// harness runs on Linux only.
func (g *run) eventLoops(context.Context) error {
	return fmt.Errorf("load: no event loop on %s: the generator needs Linux (epoll, timerfd)", runtime.GOOS)
}
