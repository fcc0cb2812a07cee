// Starts Swagger UI on the clickagg API document. A file of its own
// because the page's Content-Security-Policy allows no inline script.
"use strict";

// "Try it out" goes to the server that served this page: the document's
// servers entry names the default local address, which connect-src 'self'
// refuses whenever the page comes from anywhere else.
function sameServer() {
  return {
    statePlugins: {
      spec: {
        wrapActions: {
          updateJsonSpec: function (next) {
            return function (json) {
              var rest = Array.prototype.slice.call(arguments, 1);
              var spec = Object.assign({}, json, {
                servers: [{ url: window.location.origin, description: "This server" }],
              });
              return next.apply(null, [spec].concat(rest));
            };
          },
        },
      },
    },
  };
}

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: true,
  // The token typed into "Authorize" lives only as long as the page.
  persistAuthorization: false,
  // No badge from validator.swagger.io, no ?url= or ?configUrl= loading
  // another document: nothing comes from outside this server.
  validatorUrl: null,
  queryConfigEnabled: false,
  plugins: [sameServer],
});
