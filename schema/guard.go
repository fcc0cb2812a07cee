package schema

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/clickagg/clickagg/chclient"
)

// A guard is a migration's first line, "-- clickagg: server < 19" or
// "-- clickagg: server >= 19" (MAJOR or MAJOR.MINOR): the driver runs the
// statement only on such servers and elsewhere records the version as
// applied without running anything. Migrations stay one text for every
// server; a guard is for the rare statement that is right on one server
// line only (000024: the topK sketch view, which costs 18.16 a tenth of its
// ingest and which chstore does not read there).
type guard struct {
	below        bool // "<" rather than ">="
	major, minor int
}

const guardPrefix = "-- clickagg:"

var (
	guardRE = regexp.MustCompile(`^-- clickagg: server (<|>=) (\d+)(?:\.(\d+))?$`)
	// guardLikeRE finds what was meant as a guard, spelt loosely.
	guardLikeRE = regexp.MustCompile(`(?mi)^\s*--\s*clickagg\s*:`)
)

// splitGuard returns a migration's guard (nil when it has none) and the
// statement after it. A "-- clickagg:" line that does not parse, or is not
// the first, is an error: a guard misread would run a statement where it
// must not.
func splitGuard(sql string) (*guard, string, error) {
	sql = strings.TrimSpace(sql)
	first, rest, _ := strings.Cut(sql, "\n")
	if !guardLikeRE.MatchString(first) {
		first, rest = "", sql
	}
	if guardLikeRE.MatchString(rest) {
		return nil, "", fmt.Errorf("migration guard: %q only as the first line", guardPrefix)
	}
	if first == "" {
		return nil, rest, nil
	}
	m := guardRE.FindStringSubmatch(strings.TrimSpace(first))
	if m == nil {
		return nil, "", fmt.Errorf("migration guard %q: want %q or %q", first, guardPrefix+" server < MAJOR[.MINOR]", guardPrefix+" server >= MAJOR[.MINOR]")
	}
	g := &guard{below: m[1] == "<"}
	g.major, _ = strconv.Atoi(m[2])
	g.minor, _ = strconv.Atoi(m[3])
	return g, strings.TrimSpace(rest), nil
}

// holds reports whether the statement runs on a server of version v; a nil
// guard always holds.
func (g *guard) holds(v chclient.Version) bool {
	return g == nil || v.AtLeast(g.major, g.minor) != g.below
}

func (g *guard) String() string {
	if g == nil {
		return ""
	}
	op := ">="
	if g.below {
		op = "<"
	}
	return fmt.Sprintf("server %s %d.%d", op, g.major, g.minor)
}
