package schema

import "github.com/clickagg/clickagg/chclient"

// Guard reads a migration's guard: its text ("" without one), whether it
// holds on a server of version v, and the statement after it.
func Guard(sql string, v chclient.Version) (cond string, holds bool, stmt string, err error) {
	g, stmt, err := splitGuard(sql)
	return g.String(), g.holds(v), stmt, err
}

// PretendVersion makes m's guards and sketch view follow version v instead
// of the server's: the paths of servers these tests cannot run.
func PretendVersion(m *Migrator, v chclient.Version) { m.drv.server = &v }
