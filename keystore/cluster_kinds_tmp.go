package keystore

// Kinds of change, as h-pgcore's changes.go names them (this file goes when
// that lands here).
const (
	changeAccount = "account"
	changeBalance = "balance"
	changeKey     = "key"
)
