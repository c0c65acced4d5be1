package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/audit"
)

type auditEventBody struct {
	ID         int64          `json:"id"`
	At         time.Time      `json:"at"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Connection string         `json:"connection,omitempty"`
	Detail     map[string]any `json:"detail"`
	RequestID  string         `json:"requestId,omitempty"`
}

type auditList struct {
	Items      []auditEventBody `json:"items"`
	NextCursor string           `json:"nextCursor,omitempty"`
}

var auditParams = []string{"connection", "actor", "action", "since", "until", "limit", "cursor"}

// listAudit serves the audit log, newest first, with filters and cursor
// paging.
func (s *Server) listAudit(c *gin.Context) {
	q := c.Request.URL.Query()
	bad := func(detail string) { s.fail(c, newProblem(http.StatusBadRequest, "malformed_request", detail)) }
	if err := checkParams(q, auditParams); err != nil {
		s.fail(c, err)
		return
	}
	f := audit.Filter{Connection: q.Get("connection"), Actor: q.Get("actor"), Action: q.Get("action"), Limit: 100}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				bad(p.name + " must be an RFC 3339 time, e.g. 2026-11-27T10:00:00Z")
				return
			}
			*p.dst = t
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > audit.MaxLimit {
			bad("limit must be an integer from 1 to " + strconv.Itoa(audit.MaxLimit))
			return
		}
		f.Limit = n
	}
	if cur := q.Get("cursor"); cur != "" {
		v, err := s.cursors.decode("audit", cur)
		if err != nil {
			s.fail(c, err)
			return
		}
		if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil {
			s.fail(c, errBadCursor)
			return
		}
	}
	events, more, err := s.audit.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := auditList{Items: make([]auditEventBody, 0, len(events))}
	for _, e := range events {
		detail := e.Detail
		if detail == nil {
			detail = map[string]any{}
		}
		out.Items = append(out.Items, auditEventBody{ID: e.ID, At: e.At, Actor: e.Actor, Action: e.Action,
			Connection: e.Connection, Detail: detail, RequestID: e.RequestID})
	}
	if more && len(events) > 0 {
		out.NextCursor = s.cursors.encode("audit", strconv.FormatInt(events[len(events)-1].ID, 10))
	}
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusOK, out)
}
