package memfs

import (
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
)

func TestConformance(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS { return New(Options{}) })
}
