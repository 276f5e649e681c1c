package service

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// Load reads cfg from CARAVAN_* variables, by their full names only, and
// refuses variables earlier versions read (Retired).
//
// envconfig falls back to a field's unprefixed name (NATS_URL for
// CARAVAN_NATS_URL, LOG_LEVEL, SECRET_KEY, …) when the full one is unset,
// so an unrelated variable of a pod would change Caravan's configuration.
// Load hides those fallbacks from envconfig while it reads, and puts them
// back afterwards. It is meant for start-up, before other goroutines read
// the environment.
func Load(cfg any) error {
	if err := Retired(); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := envconfig.Usagef("CARAVAN", cfg, &buf, "{{range .}}{{.Key}} {{.Alt}}\n{{end}}"); err != nil {
		return fmt.Errorf("read configuration fields: %w", err)
	}
	restore := map[string]string{}
	defer func() {
		for k, v := range restore {
			_ = os.Setenv(k, v)
		}
	}()
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		key, alt, _ := strings.Cut(sc.Text(), " ")
		if alt == "" || alt == key {
			continue
		}
		if _, ok := os.LookupEnv(key); ok {
			continue
		}
		if v, ok := os.LookupEnv(alt); ok {
			restore[alt] = v
			_ = os.Unsetenv(alt)
		}
	}
	return envconfig.Process("CARAVAN", cfg)
}
