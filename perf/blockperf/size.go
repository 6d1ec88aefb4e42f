package blockperf

import (
	"fmt"
	"io"
	"os"
)

func sizeOf(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("blockperf: %w", err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("blockperf: size of %s: %w", path, err)
	}
	return n, nil
}
