package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/audit"
)

type apiKeyRequest struct {
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	Connections []string   `json:"connections"`
	ExpiresAt   *time.Time `json:"expiresAt"`
}

type apiKeyBody struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	Connections []string   `json:"connections"`
	Prefix      string     `json:"prefix"`
	Key         string     `json:"key,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	CreatedBy   string     `json:"createdBy,omitempty"`
	ExpiresAt   *time.Time `json:"expiresAt,omitempty"`
}

type apiKeyList struct {
	Items []apiKeyBody `json:"items"`
}

func apiKeyOut(k *access.APIKey) apiKeyBody {
	patterns := k.Connections
	if patterns == nil {
		patterns = []string{}
	}
	return apiKeyBody{ID: k.ID, Name: k.Name, Role: string(k.Role), Connections: patterns, Prefix: k.Prefix,
		CreatedAt: k.CreatedAt, CreatedBy: k.CreatedBy, ExpiresAt: k.ExpiresAt}
}

func (s *Server) createAPIKey(c *gin.Context) {
	var req apiKeyRequest
	if !s.bind(c, &req) {
		return
	}
	k, secret, err := s.keys.Create(c.Request.Context(), access.NewKey{Name: req.Name, Role: access.Role(req.Role),
		Connections: req.Connections, ExpiresAt: req.ExpiresAt, CreatedBy: actor(c)})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.audit.APIKey(c.Request.Context(), audit.ActionAPIKeyCreated, k.ID, k.Name, string(k.Role))
	out := apiKeyOut(k)
	out.Key = secret
	c.Header("Location", "/api/v1/apikeys/"+k.ID)
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusCreated, out)
}

func (s *Server) listAPIKeys(c *gin.Context) {
	keys, err := s.keys.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apiKeyList{Items: make([]apiKeyBody, 0, len(keys))}
	for _, k := range keys {
		out.Items = append(out.Items, apiKeyOut(k))
	}
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusOK, out)
}

func (s *Server) revokeAPIKey(c *gin.Context) {
	k, err := s.keys.Revoke(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	s.audit.APIKey(c.Request.Context(), audit.ActionAPIKeyRevoked, k.ID, k.Name, string(k.Role))
	c.Status(http.StatusNoContent)
}
