package gateway_test

import "log/slog"

type slogLogger = slog.Logger

var discardLogger = slog.New(slog.DiscardHandler)
