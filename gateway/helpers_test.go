package gateway_test

import (
	"encoding/json"
	"log/slog"
)

type slogLogger = slog.Logger

var discardLogger = slog.New(slog.DiscardHandler)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
