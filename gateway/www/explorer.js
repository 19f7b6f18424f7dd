// The shop's API explorer: Swagger UI on the gateway's public document, nothing fetched from
// anywhere but this origin (no online validator). The key a user pastes stays in the page.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#explorer",
    deepLinking: true,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    persistAuthorization: false,
    validatorUrl: "none",
  });
});
