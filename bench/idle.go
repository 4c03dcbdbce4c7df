package bench

import (
	"context"
	"fmt"
)

func idleMain(ctx context.Context, args []string, env Env) error {
	return fmt.Errorf("bench idle: not yet")
}
