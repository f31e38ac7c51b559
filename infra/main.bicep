// GRC Event Streaming Service: everything the Functions app needs, in one resource group.
// Deployed by `azd up` (azure.yaml at the repo root) or `az deployment sub create`.
// Data-plane access is by the Function App's system-assigned managed identity wherever the
// service supports it; the only secret (the Redis access key) lives in Key Vault.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------
@minLength(1)
@maxLength(64)
@description('azd environment name; used for the resource group name and the naming hash.')
param environmentName string

@minLength(1)
@description('Region for every resource (must offer Flex Consumption).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Resource group name; default rg-<environmentName>.')
param resourceGroupName string = ''

@description('Extra tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Network: public endpoints (TLS 1.2, Entra ID) or private endpoints in a new VNet
// ---------------------------------------------------------------------------------------------
@description('Public network access of the data services and the Function App. "Disabled" requires usePrivateEndpoints.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Enabled'

@description('Public network access of the Function App (the HTTP API). Callers authenticate with a function key and an Entra ID token; "Disabled" needs your own inbound private endpoint or front door.')
@allowed(['Enabled', 'Disabled'])
param apiPublicNetworkAccess string = 'Enabled'

@description('Create a VNet, private endpoints and private DNS zones for storage, Cosmos DB, Event Hubs, Redis and Key Vault, and integrate the Function App into it.')
param usePrivateEndpoints bool = false

@description('Address space of the VNet created when usePrivateEndpoints is true.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Subnet for the private endpoints (inside vnetAddressPrefix).')
param privateEndpointSubnetPrefix string = '10.40.1.0/24'

@description('Subnet delegated to Flex Consumption VNet integration (inside vnetAddressPrefix).')
param functionSubnetPrefix string = '10.40.2.0/24'

// ---------------------------------------------------------------------------------------------
// Encryption at rest: platform-managed keys unless a customer-managed key is given
// ---------------------------------------------------------------------------------------------
@description('Customer-managed key: Key Vault URI (https://<vault>.vault.azure.net/) holding the key. Empty = platform-managed keys.')
param cmkKeyVaultUri string = ''

@description('Customer-managed key: key name in cmkKeyVaultUri.')
param cmkKeyName string = ''

@description('Customer-managed key: resource id of a user-assigned identity that holds "Key Vault Crypto Service Encryption User" on the key.')
param cmkUserAssignedIdentityId string = ''

// ---------------------------------------------------------------------------------------------
// Function App
// ---------------------------------------------------------------------------------------------
@description('Flex Consumption instance memory (MB).')
@allowed([512, 2048, 4096])
param functionInstanceMemoryMB int = 2048

@description('Flex Consumption maximum instance count.')
@minValue(40)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Always-ready (pre-warmed) instances for the HTTP functions; 0 = scale from zero.')
param functionAlwaysReadyInstances int = 0

@description('Zone-redundant Flex Consumption plan (region must support it).')
param functionZoneRedundant bool = false

@description('LOG_LEVEL of the app.')
@allowed(['debug', 'info', 'warning', 'error'])
param logLevel string = 'info'

// ---------------------------------------------------------------------------------------------
// Data services
// ---------------------------------------------------------------------------------------------
@description('Cosmos DB capacity: Serverless (dev) or Provisioned (autoscale on the database).')
@allowed(['Serverless', 'Provisioned'])
param cosmosCapacityMode string = 'Serverless'

@description('Autoscale max RU/s of the database when cosmosCapacityMode is Provisioned.')
param cosmosAutoscaleMaxThroughput int = 4000

@description('Cosmos DB database holding the monitored containers.')
param cosmosDatabaseName string = 'grc'

@description('Monitored containers (partition key /tenantId).')
param cosmosContainers object = {
  risks: 'risks'
  controls: 'controls'
  assessments: 'assessments'
  compliance: 'compliance'
  policies: 'policies'
}

@description('Lease container of the Cosmos DB triggers (partition key /id).')
param cosmosLeaseContainerName string = 'leases'

@description('Event Hubs tier (Kafka endpoint needs Standard or above).')
@allowed(['Standard', 'Premium'])
param eventHubsSku string = 'Standard'

@description('Event Hubs throughput units (Standard) or processing units (Premium).')
param eventHubsCapacity int = 1

@description('Disable SAS keys on the Event Hubs namespace (Kafka then authenticates with OAUTHBEARER + managed identity).')
param eventHubsDisableLocalAuth bool = true

@description('One event hub (Kafka topic) per entry: name, partitionCount, retentionHours.')
param eventHubs array = [
  { name: 'grc-events', partitionCount: 8, retentionHours: 168 }
  { name: 'grc-risk-events', partitionCount: 4, retentionHours: 168 }
  { name: 'grc-compliance-events', partitionCount: 4, retentionHours: 168 }
  { name: 'grc-system-events', partitionCount: 2, retentionHours: 72 }
]

@description('Consumer groups created on every event hub.')
param eventHubConsumerGroups array = ['analytics', 'compliance-monitoring', 'ml-features']

@description('Azure Cache for Redis SKU.')
@allowed(['Basic', 'Standard', 'Premium'])
param redisSku string = 'Basic'

@description('Azure Cache for Redis family (C for Basic/Standard, P for Premium).')
@allowed(['C', 'P'])
param redisFamily string = 'C'

@description('Azure Cache for Redis capacity (0-6 for C, 1-5 for P).')
param redisCapacity int = 0

@description('Enable Microsoft Entra authentication on Redis and grant the app identity the Data Contributor access policy.')
param redisEntraAuth bool = true

@description('Storage redundancy.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param storageSku string = 'Standard_LRS'

// Names the app uses inside storage (tables, queues); app settings below point at them.
@description('Azure Table names the app writes.')
param storageTables object = {
  streamConfigs: 'streamconfigs'
  analytics: 'eventsanalytics'
  deadLetters: 'deadletters'
  audit: 'audit'
  idempotency: 'idempotency'
}

@description('Storage queues the app uses.')
param storageQueues object = {
  retry: 'grc-retry'
  vector: 'grc-vector'
}

// ---------------------------------------------------------------------------------------------
// Authentication of callers (issue 6) and vector search (issue 8): values, not secrets
// ---------------------------------------------------------------------------------------------
@description('Expected JWT issuer (e.g. https://login.microsoftonline.com/<tenant>/v2.0). Empty = only X-MS-CLIENT-PRINCIPAL.')
param authIssuer string = ''

@description('Expected JWT audience (the API app registration).')
param authAudience string = ''

@description('OpenID metadata / JWKS URL for signing keys; empty = derived from the issuer.')
param authJwksUrl string = ''

@description('Claim holding the tenant ids the caller may access.')
param authTenantClaim string = 'tenants'

@description('Per-tenant rate limit (events per second) and burst.')
param rateLimitPerSecond int = 200
param rateLimitBurst int = 1000

@description('Azure AI Search endpoint for the vector destination (existing service; empty = vector destination off).')
param searchEndpoint string = ''

@description('Azure AI Search index name.')
param searchIndexName string = 'grc-events'

@description('Azure OpenAI endpoint for embeddings (existing resource).')
param openAiEndpoint string = ''

@description('Azure OpenAI embedding deployment name.')
param openAiEmbeddingDeployment string = 'text-embedding-3-small'

@description('Embedding dimensions.')
param embeddingDimensions int = 1536

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------
@description('E-mail receivers of the alert action group.')
param alertEmailReceivers array = []

@description('Create the alert rules.')
param deployAlerts bool = true

// ---------------------------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------------------------
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName, workload: 'grc-event-streaming' })
var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var functionAppName = 'func-grc-${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 12)}'
var cmk = {
  enabled: !empty(cmkKeyVaultUri) && !empty(cmkKeyName) && !empty(cmkUserAssignedIdentityId)
  keyVaultUri: cmkKeyVaultUri
  keyName: cmkKeyName
  identityId: cmkUserAssignedIdentityId
}
// Public access is only switched off when something private can reach the services.
var effectivePublicAccess = usePrivateEndpoints ? publicNetworkAccess : 'Enabled'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: rgName
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: allTags
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: 'st${resourceToken}'
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    tables: [for t in items(storageTables): t.value]
    queues: [for q in items(storageQueues): q.value]
    publicNetworkAccess: effectivePublicAccess
    cmk: cmk
    workspaceId: monitoring.outputs.workspaceId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    location: location
    tags: allTags
    accountName: 'cosmos-${resourceToken}'
    databaseName: cosmosDatabaseName
    containerNames: [for c in items(cosmosContainers): c.value]
    leaseContainerName: cosmosLeaseContainerName
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    publicNetworkAccess: effectivePublicAccess
    cmk: cmk
    workspaceId: monitoring.outputs.workspaceId
  }
}

module eventhubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  scope: rg
  params: {
    location: location
    tags: allTags
    namespaceName: 'evhns-${resourceToken}'
    skuName: eventHubsSku
    capacity: eventHubsCapacity
    disableLocalAuth: eventHubsDisableLocalAuth
    eventHubs: eventHubs
    consumerGroups: eventHubConsumerGroups
    publicNetworkAccess: effectivePublicAccess
    workspaceId: monitoring.outputs.workspaceId
  }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: 'redis-${resourceToken}'
    skuName: redisSku
    family: redisFamily
    capacity: redisCapacity
    entraAuth: redisEntraAuth
    publicNetworkAccess: effectivePublicAccess
    workspaceId: monitoring.outputs.workspaceId
  }
}

module keyvault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: 'kv-${take(resourceToken, 20)}'
    redisName: redis.outputs.name
    eventHubsNamespaceName: eventhubs.outputs.name
    eventHubsSendRuleName: eventhubs.outputs.sendRuleName
    publicNetworkAccess: effectivePublicAccess
    workspaceId: monitoring.outputs.workspaceId
  }
}

module network 'modules/privateEndpoints.bicep' = if (usePrivateEndpoints) {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: allTags
    vnetName: 'vnet-${resourceToken}'
    addressPrefix: vnetAddressPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    functionSubnetPrefix: functionSubnetPrefix
    storageAccountId: storage.outputs.id
    cosmosAccountId: cosmos.outputs.id
    eventHubsNamespaceId: eventhubs.outputs.id
    redisId: redis.outputs.id
    keyVaultId: keyvault.outputs.id
  }
}

// ---------------------------------------------------------------------------------------------
// App settings: every setting the code reads (shared/settings.py) plus the host's own.
// tests/test_settings_inventory.py parses the block between the markers; keep one
// `NAME: value` per line and no nested objects inside it.
// ---------------------------------------------------------------------------------------------
var kafkaBootstrap = '${eventhubs.outputs.name}.servicebus.windows.net:9093'
// settings:start
var appSettings = {
  // Functions host: identity-based host storage and telemetry (Flex: no FUNCTIONS_WORKER_RUNTIME).
  AzureWebJobsStorage__accountName: storage.outputs.name
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  // Cosmos DB trigger binding (connection="COSMOS"): identity-based.
  COSMOS__accountEndpoint: cosmos.outputs.endpoint
  LOG_LEVEL: logLevel
  HEALTH_TIMEOUT_SECONDS: '2'
  // Redis: TLS on 6380; the access key comes from Key Vault.
  REDIS_HOST: redis.outputs.hostName
  REDIS_PORT: '6380'
  REDIS_SSL: 'true'
  REDIS_PASSWORD: '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.redisPasswordSecretUri})'
  // Storage: account name + managed identity (no connection string in Azure).
  STORAGE_ACCOUNT_NAME: storage.outputs.name
  STREAM_CONFIG_TABLE: storageTables.streamConfigs
  STREAM_CONFIG_CACHE_SECONDS: '30'
  ANALYTICS_TABLE: storageTables.analytics
  DEADLETTER_TABLE: storageTables.deadLetters
  AUDIT_TABLE: storageTables.audit
  IDEMPOTENCY_TABLE: storageTables.idempotency
  RETRY_QUEUE: storageQueues.retry
  VECTOR_QUEUE: storageQueues.vector
  // Cosmos DB (SDK calls of the app; the trigger uses COSMOS__accountEndpoint).
  COSMOS_DB_ENDPOINT: cosmos.outputs.endpoint
  COSMOS_DB_DATABASE: cosmosDatabaseName
  COSMOS_RISKS_CONTAINER: cosmosContainers.risks
  COSMOS_CONTROLS_CONTAINER: cosmosContainers.controls
  COSMOS_ASSESSMENTS_CONTAINER: cosmosContainers.assessments
  COSMOS_COMPLIANCE_CONTAINER: cosmosContainers.compliance
  COSMOS_POLICIES_CONTAINER: cosmosContainers.policies
  COSMOS_LEASE_CONTAINER: cosmosLeaseContainerName
  // Event Hubs through its Kafka endpoint: OAUTHBEARER with the managed identity, or (SAS
  // enabled) PLAIN with $ConnectionString and the connection string from Key Vault; and AMQP.
  KAFKA_BROKER: kafkaBootstrap
  KAFKA_SECURITY_PROTOCOL: 'SASL_SSL'
  KAFKA_SASL_MECHANISM: eventHubsDisableLocalAuth ? 'OAUTHBEARER' : 'PLAIN'
  KAFKA_SASL_USERNAME: eventHubsDisableLocalAuth ? '' : '$ConnectionString'
  KAFKA_SASL_PASSWORD: eventHubsDisableLocalAuth ? '' : '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.eventHubsConnectionSecretUri})'
  EVENTHUB_FULLY_QUALIFIED_NAMESPACE: '${eventhubs.outputs.name}.servicebus.windows.net'
  // Caller authentication and tenant isolation.
  AUTH_ISSUER: authIssuer
  AUTH_AUDIENCE: authAudience
  AUTH_JWKS_URL: authJwksUrl
  AUTH_TENANT_CLAIM: authTenantClaim
  RATE_LIMIT_PER_SECOND: string(rateLimitPerSecond)
  RATE_LIMIT_BURST: string(rateLimitBurst)
  // Vector destination: Azure AI Search + Azure OpenAI embeddings (managed identity).
  VECTOR_BACKEND: empty(searchEndpoint) ? 'none' : 'azure_search'
  AZURE_SEARCH_ENDPOINT: searchEndpoint
  AZURE_SEARCH_INDEX: searchIndexName
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_EMBEDDING_DEPLOYMENT: openAiEmbeddingDeployment
  EMBEDDING_DIMENSIONS: string(embeddingDimensions)
}
// settings:end

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: functionAppName
    planName: 'plan-${resourceToken}'
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    instanceMemoryMB: functionInstanceMemoryMB
    maximumInstanceCount: functionMaximumInstanceCount
    alwaysReadyHttpInstances: functionAlwaysReadyInstances
    zoneRedundant: functionZoneRedundant
    appSettings: appSettings
    publicNetworkAccess: apiPublicNetworkAccess
    virtualNetworkSubnetId: usePrivateEndpoints ? network.outputs.functionSubnetId : ''
    workspaceId: monitoring.outputs.workspaceId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    cosmosAccountName: cosmos.outputs.name
    eventHubsNamespaceName: eventhubs.outputs.name
    keyVaultName: keyvault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    redisName: redis.outputs.name
    redisEntraAuth: redisEntraAuth
    eventHubsConnectionSecret: !eventHubsDisableLocalAuth
  }
}

module alerts 'modules/alerts.bicep' = if (deployAlerts) {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: allTags
    namePrefix: 'grc-${environmentName}'
    appInsightsId: monitoring.outputs.appInsightsId
    emailReceivers: alertEmailReceivers
  }
}

// azd reads these outputs into the environment (.azure/<env>/.env).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = 'https://${functionApp.outputs.defaultHostName}'
output COSMOS_DB_ENDPOINT string = cosmos.outputs.endpoint
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output KAFKA_BROKER string = kafkaBootstrap
output REDIS_HOST string = redis.outputs.hostName
output KEY_VAULT_NAME string = keyvault.outputs.name
