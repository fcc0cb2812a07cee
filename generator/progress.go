package generator

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress writes a line a second about the last second until stop closes.
type progress struct {
	w        io.Writer
	terminal bool // rewrite one line with "\r" instead of adding lines
	st       *stats
	width    int // of the last line, to blank its rest on a terminal
}

func newProgress(w io.Writer, st *stats) *progress {
	return &progress{w: w, terminal: isTerminal(w), st: st}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (p *progress) run(stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last counts
	lastAt := time.Now()
	for {
		select {
		case <-stop:
			if p.terminal && p.width > 0 {
				fmt.Fprintln(p.w)
			}
			return
		case now := <-tick.C:
			c := p.st.counts()
			p.print(c.minus(last), now.Sub(lastAt))
			last, lastAt = c, now
		}
	}
}

// counts is a snapshot of the counters the progress line shows.
type counts struct{ sent, accepted, rejected, duplicates, errors int64 }

func (st *stats) counts() counts {
	return counts{st.sent.Load(), st.accepted.Load(), st.rejected.Load(), st.duplicates.Load(), st.errors.Load()}
}

func (c counts) minus(o counts) counts {
	return counts{c.sent - o.sent, c.accepted - o.accepted, c.rejected - o.rejected, c.duplicates - o.duplicates, c.errors - o.errors}
}

func (p *progress) print(d counts, over time.Duration) {
	per := func(n int64) float64 { return float64(n) / over.Seconds() }
	p50, p99 := p.st.takeWindow()
	line := fmt.Sprintf("%7.0f ev/s sent, %7.0f accepted/s, %5.0f rejected/s", per(d.sent), per(d.accepted), per(d.rejected))
	if p.st.sawDuplicates.Load() {
		line += fmt.Sprintf(", %5.0f duplicates/s", per(d.duplicates))
	}
	line += fmt.Sprintf(", %d errors, ack p50 %.1f ms p99 %.1f ms", d.errors, ms(p50), ms(p99))
	if !p.terminal {
		fmt.Fprintln(p.w, line)
		return
	}
	pad := max(p.width-len(line), 0)
	p.width = len(line)
	fmt.Fprint(p.w, "\r"+line+strings.Repeat(" ", pad))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
