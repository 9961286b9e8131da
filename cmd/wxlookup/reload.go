package main

import (
	"context"
	"os"
	"reflect"

	"wxlookup/server"
)

// ReloadConfig reads the configuration again (the --config file and the environment) and
// applies its queries (SPEC section 10): added queries warm in the background and go live
// when their first load completes, removed ones stop, changed ones are replaced once the
// new version has loaded. An invalid file, or a new query whose source cannot be opened or
// whose table does not match, is refused with an error of one line, also logged, and the
// running queries stay. Other settings take effect at the next start; a change to one is
// logged. SIGHUP and POST /admin/reload-config call it; one reload runs at a time.
func (m *Main) ReloadConfig(ctx context.Context) (server.ConfigChange, error) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	getenv := m.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg, err := LoadConfig(m.ConfigPath, getenv)
	if err == nil {
		var change server.ConfigChange
		if change, err = m.queries.apply(ctx, cfg.queryList()); err == nil {
			if changed := otherSettingsChanged(m.Config, cfg); len(changed) > 0 {
				m.Logger.Warn("config reload: only queries change while running; these settings take effect at the next start", "settings", changed)
			}
			m.Logger.Info("config reload: applied", "added", change.Added, "removed", change.Removed,
				"changed", change.Changed, "unchanged", change.Unchanged)
			return change, nil
		}
	}
	m.Logger.Error("config reload refused, the running queries stay: " + err.Error())
	return server.ConfigChange{}, err
}

// reloadable are the fields of Config that a configuration reload applies: the queries, and
// what the implicit query and the queries' default templates are made of.
var reloadable = map[string]bool{"Queries": true, "Table": true, "KeyColumn": true, "ValueColumns": true,
	"UpdatedColumn": true, "CSV": true}

// otherSettingsChanged names the exported fields of Config, other than the reloadable ones,
// whose value differs between running and loaded (the unexported ones follow from them). It
// names them, never showing a value.
func otherSettingsChanged(running, loaded Config) []string {
	// The found and not-found templates are the queries' defaults: reloadable.
	running.Templates.Found, running.Templates.NotFound = "", ""
	loaded.Templates.Found, loaded.Templates.NotFound = "", ""
	a, b := reflect.ValueOf(running), reflect.ValueOf(loaded)
	var changed []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		if f.IsExported() && !reloadable[f.Name] && !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			changed = append(changed, f.Name)
		}
	}
	return changed
}
