package service

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/logging"
)

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Run starts a service and serves until SIGTERM or SIGINT, then shuts it down
// gracefully (see Close). ready, when not nil, is called once the service accepts
// clients. A clean shutdown returns nil, so the process exits 0.
func Run(cfg Config, logger *zap.Logger, ready func(*Service)) error {
	log := logging.OrNop(logger)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	s, err := Start(cfg, log)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(s)
	}
	sig := <-sigs
	log.Info("shutting down", zap.Stringer("signal", sig))
	return s.Close()
}
