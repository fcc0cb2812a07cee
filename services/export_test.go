package services

// AnalystPasswordForUp is the password Up would give the analyst in o.Dir,
// kept there as Up keeps it.
func AnalystPasswordForUp(o Options) (string, error) {
	l, err := o.layout()
	if err != nil {
		return "", err
	}
	return l.analystPassword(o)
}
