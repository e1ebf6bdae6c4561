package management

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
)

// decimalFlag is an integer flag read in base 10 only. pflag's own integer
// flags accept Go literals (010 is 8, 0x10 is 16, 1_000 is 1000), so an
// operator who pads a limit with a zero would silently get another limit
// than the Caddyfile gives for the same text.
type decimalFlag struct{ p *int64 }

func (f decimalFlag) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return fmt.Errorf("%q is out of range", s)
		}
		return fmt.Errorf("%q is not a whole number in decimal digits", s)
	}
	*f.p = v
	return nil
}

func (f decimalFlag) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.FormatInt(*f.p, 10)
}

func (decimalFlag) Type() string { return "int" }

// decimalVar defines an int64 flag read in base 10 only (see decimalFlag).
func decimalVar(fs *pflag.FlagSet, p *int64, name, usage string) {
	fs.Var(decimalFlag{p}, name, usage)
}

// decimalIntVar is decimalVar for an int.
func decimalIntVar(fs *pflag.FlagSet, p *int, name, usage string) {
	fs.Var(decimalIntFlag{p}, name, usage)
}

// decimalIntFlag is decimalFlag for an int.
type decimalIntFlag struct{ p *int }

func (f decimalIntFlag) Set(s string) error {
	var v int64
	if err := (decimalFlag{&v}).Set(s); err != nil {
		return err
	}
	if int64(int(v)) != v {
		return fmt.Errorf("%q is out of range", s)
	}
	*f.p = int(v)
	return nil
}

func (f decimalIntFlag) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.Itoa(*f.p)
}

func (decimalIntFlag) Type() string { return "int" }

// Interface guards
var (
	_ pflag.Value = decimalFlag{}
	_ pflag.Value = decimalIntFlag{}
)
