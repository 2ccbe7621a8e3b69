// Starts Redoc on the page's #redoc element. A file rather than an inline script: the
// page's Content-Security-Policy allows scripts from this origin only.
(function () {
  'use strict';
  var root = document.getElementById('redoc');
  var fonts = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  Redoc.init(root.getAttribute('data-spec-url'), {
    expandResponses: '200,201,202',
    jsonSampleExpandLevel: 3,
    // system fonts: nothing is fetched from elsewhere, the page works offline
    theme: {typography: {fontFamily: fonts, headings: {fontFamily: fonts}}}
  }, root);
})();
