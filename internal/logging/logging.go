// Package logging builds the zap logger that every polytropon process uses, from the
// command line's --log-level and --log-format flags.
//
// Libraries in polytropon take a *zap.Logger as an argument (nil means zap.NewNop());
// they never reach for a global logger, so that embedding programs and tests decide
// where lines go.
//
// It holds no state and no locks of its own (zap's are inside the logger it
// returns); logging is off the data paths, so nothing here is measured.
package logging

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Formats accepted by New.
const (
	FormatConsole = "console"
	FormatJSON    = "json"
)

// New returns a logger writing to w (os.Stderr when nil) at level ("debug", "info",
// "warn", "error") in format (FormatConsole or FormatJSON).
func New(w io.Writer, level, format string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("logging: bad --log-level %q: want debug, info, warn or error", level)
	}
	if w == nil {
		w = os.Stderr
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case FormatConsole:
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	case FormatJSON:
		enc = zapcore.NewJSONEncoder(encCfg)
	default:
		return nil, fmt.Errorf("logging: bad --log-format %q: want %s or %s", format, FormatConsole, FormatJSON)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(w), lvl)
	return zap.New(core), nil
}

// OrNop returns l, or a no-op logger when l is nil.
func OrNop(l *zap.Logger) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return l
}
