package outbound

// Control exposes the net.Dialer.Control hook so tests can check it with an
// address DialContext itself would never dial.
var Control = (*Guard).control
