//go:build !linux

package load

import (
	"context"
	"errors"
)

const haveEventLoop = false

func (g *run) eventLoops(context.Context) error {
	return errors.New("load: no event loop on this system")
}
