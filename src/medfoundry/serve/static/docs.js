// The API page: Swagger UI (vendored at install time) over /openapi.json.
"use strict";
if (window.SwaggerUIBundle) {
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
}
