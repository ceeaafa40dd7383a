// The API page: Swagger UI over this server's schema. A file, not an inline script, so that the page's
// Content-Security-Policy can refuse inline scripts.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // the default validator sends the schema to validator.swagger.io; this page stays on this server
  validatorUrl: null,
});
