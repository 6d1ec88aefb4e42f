package tune

import (
	"fmt"
	"io"
	"strings"
)

// progress draws a one-line bar, redrawn with a carriage return; nil writer
// draws nothing.
type progress struct {
	w          io.Writer
	total, cur int
}

func newProgress(w io.Writer, total int) *progress { return &progress{w: w, total: total} }

const barWidth = 30

func (p *progress) step(what string) {
	if p.w == nil {
		return
	}
	p.cur++
	filled := barWidth * p.cur / max(p.total, 1)
	fmt.Fprintf(p.w, "\r[%s%s] %3d%% %-32s", strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled),
		100*p.cur/max(p.total, 1), what)
}

func (p *progress) done() {
	if p.w != nil {
		fmt.Fprintln(p.w)
	}
}
