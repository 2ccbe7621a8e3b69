// Starts Swagger UI on the page's #swagger-ui element. A file rather than an inline script:
// the page's Content-Security-Policy allows scripts from this origin only.
(function () {
  'use strict';
  var root = document.getElementById('swagger-ui');
  window.ui = SwaggerUIBundle({
    url: root.getAttribute('data-spec-url'),
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    deepLinking: true,
    docExpansion: 'list',
    defaultModelsExpandDepth: 0,
    displayRequestDuration: true,
    filter: true,
    // no call to the public validator service: the page works offline
    validatorUrl: null,
    // keys stay in the page's memory, never in localStorage
    persistAuthorization: false
  });
})();
