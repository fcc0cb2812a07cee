package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// logConfig picks slog's handler and level.
type logConfig struct{ format, level string }

func (l *logConfig) register(f *flags) {
	l.format, l.level = "text", "info"
	f.v(&l.format, "log-format", "CLICKAGG_LOG_FORMAT", "log format: text or json (one line per record)")
	f.v(&l.level, "log-level", "CLICKAGG_LOG_LEVEL", "least severe level logged: debug, info, warn, error")
	f.after = append(f.after, func() error {
		if l.format != "text" && l.format != "json" {
			return fmt.Errorf("--log-format %q [CLICKAGG_LOG_FORMAT]: want text or json", l.format)
		}
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(l.level)); err != nil {
			return fmt.Errorf("--log-level %q [CLICKAGG_LOG_LEVEL]: want debug, info, warn or error", l.level)
		}
		return nil
	})
}

func (l *logConfig) logger(w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.level)) // checked at parse
	o := &slog.HandlerOptions{Level: lv}
	if l.format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// redisLog routes go-redis' own messages (dial failures, pool trouble) to
// slog instead of its standard-library logger on stderr.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "go-redis")
}

// useRedisLog installs l for go-redis, whose logger is process-wide.
func useRedisLog(l *slog.Logger) { redis.SetLogger(redisLog{l}) }
