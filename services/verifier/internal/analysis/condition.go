package analysis

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// Evaluate judges one measured value the way Argo Rollouts does:
//   - neither condition set: Successful;
//   - only successCondition: Successful when it holds, Failed otherwise;
//   - only failureCondition: Failed when it holds, Successful otherwise;
//   - both: Failed when failureCondition holds, Successful when only
//     successCondition holds, Inconclusive when neither does.
//
// A condition that does not compile, fails at run time or does not give a
// bool is an error (the measurement's phase is then Error).
func Evaluate(result any, successCondition, failureCondition string) (Phase, error) {
	var success, failure bool
	var err error
	if successCondition != "" {
		if success, err = EvalCondition(result, successCondition); err != nil {
			return PhaseError, fmt.Errorf("successCondition: %w", err)
		}
	}
	if failureCondition != "" {
		if failure, err = EvalCondition(result, failureCondition); err != nil {
			return PhaseError, fmt.Errorf("failureCondition: %w", err)
		}
	}
	switch {
	case successCondition == "" && failureCondition == "":
		return PhaseSuccessful, nil
	case failureCondition == "":
		failure = !success
	case successCondition == "":
		success = !failure
	}
	switch {
	case failure:
		return PhaseFailed, nil
	case success:
		return PhaseSuccessful, nil
	}
	return PhaseInconclusive, nil
}

// programs caches compiled conditions: the same few expressions are
// evaluated for every measurement of every run.
var programs sync.Map // string → *vm.Program

// EvalCondition evaluates a boolean expr-lang expression over result, with
// Argo's helper functions asInt, asFloat, isNaN, isInf, isNil and default.
func EvalCondition(result any, condition string) (bool, error) {
	prog, err := compile(condition)
	if err != nil {
		return false, err
	}
	out, err := expr.Run(prog, env{Result: result})
	if err != nil {
		return false, fmt.Errorf("evaluate %q: %w", condition, err)
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("evaluate %q: expected bool, got %T", condition, out)
	}
	return b, nil
}

func compile(condition string) (*vm.Program, error) {
	if p, ok := programs.Load(condition); ok {
		return p.(*vm.Program), nil
	}
	p, err := expr.Compile(condition, conditionOptions...)
	if err != nil {
		return nil, fmt.Errorf("compile %q: %w", condition, err)
	}
	programs.Store(condition, p)
	return p, nil
}

// env is what conditions see: result, of any type.
type env struct {
	Result any `expr:"result"`
}

var conditionOptions = []expr.Option{
	expr.Env(env{}),
	expr.Function("asInt", func(params ...any) (any, error) { return asInt(params[0]) }, new(func(any) int64)),
	expr.Function("asFloat", func(params ...any) (any, error) { return asFloat(params[0]) }, new(func(any) float64)),
	expr.Function("isNaN", func(params ...any) (any, error) {
		f, err := asFloat(params[0])
		return err == nil && math.IsNaN(f), nil
	}, new(func(any) bool)),
	expr.Function("isInf", func(params ...any) (any, error) {
		f, err := asFloat(params[0])
		return err == nil && math.IsInf(f, 0), nil
	}, new(func(any) bool)),
	expr.Function("isNil", func(params ...any) (any, error) { return isNil(params[0]), nil }, new(func(any) bool)),
	expr.Function("default", func(params ...any) (any, error) {
		if isNil(params[0]) {
			return params[1], nil
		}
		return params[0], nil
	}, new(func(any, any) any)),
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface, reflect.Func, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

var errNotNumber = errors.New("not a number")

func asInt(v any) (int64, error) {
	switch n := v.(type) {
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("asInt(%q): %w", n, errNotNumber)
		}
		return i, nil
	case float64:
		return int64(n), nil
	case float32:
		return int64(n), nil
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	case int32:
		return int64(n), nil
	case bool:
		return 0, fmt.Errorf("asInt(%v): %w", n, errNotNumber)
	}
	return 0, fmt.Errorf("asInt(%T): %w", v, errNotNumber)
}

func asFloat(v any) (float64, error) {
	switch n := v.(type) {
	case string:
		f, err := strconv.ParseFloat(n, 64)
		if err != nil {
			return 0, fmt.Errorf("asFloat(%q): %w", n, errNotNumber)
		}
		return f, nil
	case float64:
		return n, nil
	case float32:
		return float64(n), nil
	case int:
		return float64(n), nil
	case int64:
		return float64(n), nil
	case int32:
		return float64(n), nil
	}
	return 0, fmt.Errorf("asFloat(%T): %w", v, errNotNumber)
}
