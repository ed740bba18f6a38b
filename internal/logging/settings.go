package logging

import "strings"

// Settings are the logging variables of both programs, embedded in the
// agent's and the server's configuration structs (internal/envconf reads
// the tags), so that both accept the same values.
type Settings struct {
	LogLevel  string `env:"LOG_LEVEL" envDefault:"info" help:"log level: debug, info, warn (or warning) or error, in any case"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"text" help:"log format: text (colour only on a terminal) or json"`
}

// levelNames are the levels ParseLevel accepts.
const levelNames = "debug, info, warn (or warning), error"

// Check trims the settings and puts them in lower case, and reports each
// invalid one through add as a problem of its variable (envconf.Problems.Add).
func (s *Settings) Check(add func(name, format string, args ...any)) {
	s.LogLevel = strings.ToLower(strings.TrimSpace(s.LogLevel))
	s.LogFormat = strings.ToLower(strings.TrimSpace(s.LogFormat))
	if _, err := ParseLevel(s.LogLevel); err != nil {
		add("LOG_LEVEL", "%q is not one of %s", s.LogLevel, levelNames)
	}
	if s.LogFormat != FormatText && s.LogFormat != FormatJSON {
		add("LOG_FORMAT", "%q is not one of %s, %s", s.LogFormat, FormatText, FormatJSON)
	}
}
