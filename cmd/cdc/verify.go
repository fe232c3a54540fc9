package main

import (
	"context"
	"io"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/config"
)

func runVerify(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	return usageErr("verify is not implemented yet")
}

func runBackfill(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	return usageErr("backfill is not implemented yet")
}

func runDeadLetter(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	return usageErr("deadletter is not implemented yet")
}
